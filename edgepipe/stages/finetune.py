"""finetune: transfer learning of a registry backbone with a new head; keeps the best val checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.loaders import SplitData
from edgepipe.data.transforms import preprocessing_from
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, seed_everything
from edgepipe.train.history import write_history
from edgepipe.train.loop import evaluate, fit, warmup_cosine

log = logging.getLogger(__name__)

name = "finetune"
needs = ("split",)


def config(recipe: Recipe) -> dict[str, Any]:
    d = recipe.data
    return {
        "seed": recipe.seed,
        "model": recipe.model.model_dump(),
        "finetune": recipe.finetune.model_dump(),
        "data": d.model_dump(include={"image_size", "crop_pct", "mean", "std", "batch_size", "augment"}),
    }


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(ctx: StageContext) -> StageResult:
    import torch

    r, cfg = ctx.recipe, ctx.recipe.finetune
    seed_everything(r.seed)
    pre = preprocessing_from(r.data)
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    from edgepipe.models.build import build_model

    model, weights_source = build_model(r.model, len(data.classes))
    dev = device()
    model.to(dev)
    train_loader, val_loader = data.loader("train", train=True), data.loader("val")
    steps = (
        len(train_loader)
        if cfg.max_batches_per_epoch is None
        else min(len(train_loader), cfg.max_batches_per_epoch)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, max(1, steps * cfg.epochs), steps * cfg.warmup_epochs)
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
        amp=cfg.amp,
        max_batches=cfg.max_batches_per_epoch,
    )
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    test = evaluate(model, data.loader("test"), dev, description="test")
    val = evaluate(model, val_loader, dev, description="val")
    checkpoint = {
        "arch": r.model.arch,
        "model_cfg": r.model.model_dump(),
        "num_classes": len(data.classes),
        "classes": data.classes,
        "preprocessing": pre,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "epoch": result.best_epoch,
        "weights_source": weights_source,
    }
    with atomic_path(ctx.out_dir / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    write_history(ctx.out_dir, result.history, title=f"finetune {r.model.arch}")
    metrics = {
        "val_top1": val["top1"],
        "test_top1": test["top1"],
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "device": str(dev),
        "weights_source": weights_source,
    }
    log.info("finetune: val top-1 %.2f, test top-1 %.2f", val["top1"], test["top1"])
    return StageResult(outputs={"checkpoint": "model.pt", "history": "history.csv"}, metrics=metrics)
