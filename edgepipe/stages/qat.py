"""qat: quantization-aware training of the quantizable twin, initialised from the finetune checkpoint."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import Recipe
from edgepipe.stages.base import (
    PREPROCESSING_DATA_KEYS,
    SPLIT_DATA_KEYS,
    StageContext,
    StageSpec,
    seed_everything,
)
from edgepipe.train import distributed as ddp
from edgepipe.train.freeze import freezer_for
from edgepipe.train.history import write_history
from edgepipe.train.loop import FitHooks
from edgepipe.train.trainer import device, evaluation_metrics, train_model

log = logging.getLogger(__name__)


def config(recipe: Recipe) -> dict[str, Any]:
    return {
        "seed": recipe.seed,
        "qat": recipe.qat.model_dump(),
        "trainable_last": trainable_last(recipe)[0],
        "data": recipe.data.model_dump(exclude=SPLIT_DATA_KEYS | PREPROCESSING_DATA_KEYS),
        **ddp.config(),
    }


def trainable_last(recipe: Recipe) -> tuple[int | str, str]:
    """Blocks QAT trains (qat.trainable_last, else model.freeze.trainable_last) and the key that said so."""
    if recipe.qat.trainable_last is not None:
        return recipe.qat.trainable_last, "qat.trainable_last"
    return recipe.model.freeze.trainable_last, "model.freeze.trainable_last"


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

    from edgepipe.models.build import architecture, build_model
    from edgepipe.models.checkpoint import read_checkpoint
    from edgepipe.quant.qat import NUMERICS, freeze_bn_stats, freeze_observers, freeze_plan, prepare_qat

    r, cfg = ctx.recipe, ctx.recipe.qat
    seed_everything(r.seed)
    float_ckpt = read_checkpoint(ctx.input("checkpoint"))
    pre = Preprocessing.from_dict(float_ckpt["preprocessing"])
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    model_cfg = architecture(float_ckpt["model_cfg"])
    model, _ = build_model(
        model_cfg, float_ckpt["num_classes"], quantizable=True, image_size=pre.input_size[-1]
    )
    model.load_state_dict(float_ckpt["state_dict"])
    # binds each int32 bias to its input; weights on the grid the targets' kernels compute (qat.numerics)
    prepare_qat(model, example=torch.zeros(1, *pre.input_size), numerics=cfg.numerics)
    dev = device()
    model.to(dev)
    # The prepared twin's blocks are the float model's (fused in place), so the count means the same layers.
    trainable, key = trainable_last(r)
    freezer = freezer_for(model, model_cfg.arch, trainable, key=key)
    freeze = freezer.summary(model) if freezer is not None else None
    resume = ctx.resume_state("qat")
    if resume is None or resume.state is None:  # a resumed state carries its calibrated observers
        _calibrate(model, data.loader("train"), cfg.calibration_batches, dev)

    bn_epoch, observer_epoch, notes = freeze_plan(cfg.epochs, cfg.freeze_bn_epoch, cfg.freeze_observer_epoch)
    for note in notes:
        log.warning(note)

    def on_epoch_start(epoch: int) -> None:
        if epoch >= bn_epoch:
            freeze_bn_stats(model)
        if epoch >= observer_epoch:
            freeze_observers(model)

    hooks = FitHooks(on_epoch_start=on_epoch_start, eval_context=lambda: _observers_paused(model))
    result = train_model(model, data, r, cfg, dev, freezer, hooks=hooks, resume=resume)
    if not ddp.is_main():  # rank 0 evaluates and writes the stage
        return StageResult()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    freeze_observers(model)
    freeze_bn_stats(model)
    model.eval()
    evals = evaluation_metrics(model, data, dev, ctx.out_dir, title=f"QAT {float_ckpt['arch']} (fake-quant)")
    checkpoint = {k: v for k, v in float_ckpt.items() if k not in ("state_dict", "epoch")}
    qmin, qmax = NUMERICS[cfg.numerics]
    checkpoint.update(
        {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "epoch": result.best_epoch,
            "quant": {
                "scheme": "eager-qat",
                "weights": f"int8 per-channel symmetric on [{qmin}, {qmax}]",
                "numerics": cfg.numerics,
                "activations": "uint8 per-tensor affine",
                "qat": cfg.model_dump(),
            },
        }
    )
    with atomic_path(ctx.out_dir / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    write_history(ctx.out_dir, result.history, title=f"QAT {checkpoint['arch']}")
    metrics = {
        **evals,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "device": str(dev),
        "processes": ddp.world_size(),
        "freeze": freeze,
        # the epochs actually used (an unset observer epoch resolved) and any freeze that never arrived
        "freeze_plan": {"bn_epoch": bn_epoch, "observer_epoch": observer_epoch, "warnings": notes},
        "speed": result.speed,  # fake-quant trains in float32; a failed compile shows as its error
    }
    log.info("qat: fake-quant val top-1 %.2f, test top-1 %.2f", evals["val_top1"], evals["test_top1"])
    return StageResult(outputs={"qat_checkpoint": "model.pt"}, metrics=metrics)


STAGE = StageSpec(
    name="qat",
    needs=("split", "checkpoint"),
    outputs=("qat_checkpoint",),
    config=config,
    run=run,
    distributed=True,
)
