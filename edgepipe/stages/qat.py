"""qat: quantization-aware training of the quantizable twin, initialised from the finetune checkpoint."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.loaders import SplitData
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, seed_everything
from edgepipe.stages.finetune import device
from edgepipe.train.history import write_history
from edgepipe.train.loop import evaluate, fit, warmup_cosine

log = logging.getLogger(__name__)

name = "qat"
needs = ("split", "checkpoint")


def config(recipe: Recipe) -> dict[str, Any]:
    return {
        "seed": recipe.seed,
        "qat": recipe.qat.model_dump(),
        "data": recipe.data.model_dump(include={"batch_size", "augment"}),
    }


def load_qat_model(checkpoint: dict):
    """Rebuild a prepared QAT model from a qat checkpoint (architecture + quant config travel with it)."""
    from edgepipe.models.build import build_model
    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
    from edgepipe.recipe import ModelConfig

    cfg = ModelConfig(**{**checkpoint["model_cfg"], "pretrained": "none"})
    model, _ = build_model(cfg, checkpoint["num_classes"], quantizable=True)
    prepare_qat(model)
    model.load_state_dict(checkpoint["state_dict"])
    freeze_observers(model)
    freeze_bn_stats(model)
    return model.eval()


@contextlib.contextmanager
def _observers_paused(model):
    """Validation must not move quantization ranges: pause observers, restore their previous state."""
    from edgepipe.quant.qat import fake_quant_modules

    mods = [m for _, m in fake_quant_modules(model)]
    before = [bool(m.observer_enabled[0]) for m in mods]
    for m in mods:
        m.disable_observer()
    try:
        yield
    finally:
        for m, on in zip(mods, before, strict=True):
            if on:
                m.enable_observer()


def _calibrate(model, loader, batches: int, dev) -> None:
    """Initialise activation ranges on a few train batches before training (BN in eval: stats untouched)."""
    import torch

    from edgepipe.progress import track

    model.eval()
    with torch.inference_mode():
        for i, (images, _) in enumerate(track(loader, "qat calibration", min(batches, len(loader)))):
            if i >= batches:
                break
            model(images.to(dev))


def run(ctx: StageContext) -> StageResult:
    import torch

    from edgepipe.models.build import build_model
    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
    from edgepipe.recipe import ModelConfig

    r, cfg = ctx.recipe, ctx.recipe.qat
    seed_everything(r.seed)
    float_ckpt = torch.load(ctx.input("checkpoint"), map_location="cpu", weights_only=False)
    data = SplitData(ctx.input("split"), r.data, float_ckpt["preprocessing"], r.seed)
    model_cfg = ModelConfig(**{**float_ckpt["model_cfg"], "pretrained": "none"})
    model, _ = build_model(model_cfg, float_ckpt["num_classes"], quantizable=True)
    model.load_state_dict(float_ckpt["state_dict"])
    prepare_qat(model)
    dev = device()
    model.to(dev)
    train_loader, val_loader = data.loader("train", train=True), data.loader("val")
    _calibrate(model, data.loader("train"), cfg.calibration_batches, dev)

    def on_epoch_start(epoch: int) -> None:
        if epoch >= cfg.freeze_bn_epoch:
            freeze_bn_stats(model)
        if epoch >= cfg.freeze_observer_epoch:
            freeze_observers(model)

    steps = (
        len(train_loader)
        if cfg.max_batches_per_epoch is None
        else min(len(train_loader), cfg.max_batches_per_epoch)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, max(1, steps * cfg.epochs), 0)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result = fit(
        model,
        train_loader,
        val_loader,
        epochs=cfg.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        device=dev,
        patience=cfg.patience,
        max_batches=cfg.max_batches_per_epoch,
        on_epoch_start=on_epoch_start,
        eval_context=lambda: _observers_paused(model),
    )
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    freeze_observers(model)
    freeze_bn_stats(model)
    model.eval()
    val = evaluate(model, val_loader, dev, description="qat val")
    test = evaluate(model, data.loader("test"), dev, description="qat test")
    checkpoint = {k: v for k, v in float_ckpt.items() if k not in ("state_dict", "epoch")}
    checkpoint.update(
        {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "epoch": result.best_epoch,
            "quant": {
                "scheme": "eager-qat",
                "weights": "int8 per-channel symmetric",
                "activations": "uint8 per-tensor affine",
                "qat": cfg.model_dump(),
            },
        }
    )
    with atomic_path(ctx.out_dir / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    write_history(ctx.out_dir, result.history, title=f"QAT {checkpoint['arch']}")
    metrics = {
        "val_top1": val["top1"],
        "test_top1": test["top1"],
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "device": str(dev),
    }
    log.info("qat: fake-quant val top-1 %.2f, test top-1 %.2f", val["top1"], test["top1"])
    return StageResult(outputs={"qat_checkpoint": "model.pt"}, metrics=metrics)
