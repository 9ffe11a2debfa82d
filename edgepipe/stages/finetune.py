"""finetune: transfer learning of a registry backbone with a new head; keeps the best val checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.datasets import make_loader
from edgepipe.data.loaders import SplitData
from edgepipe.data.split import class_counts
from edgepipe.data.transforms import preprocessing_from
from edgepipe.recipe import FinetuneConfig, QatConfig, Recipe
from edgepipe.stages.base import StageContext, seed_everything
from edgepipe.train import distributed as ddp
from edgepipe.train.freeze import freezer_for
from edgepipe.train.history import write_history
from edgepipe.train.loop import evaluate, fit
from edgepipe.train.losses import balanced_sampler, build_criterion
from edgepipe.train.metrics import classification_metrics, summary, write_eval_report
from edgepipe.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

name = "finetune"
needs = ("split",)
distributed = True  # runs on every torchrun rank (the pipeline runs other stages on rank 0 only)
_DATA_KEYS = {"image_size", "crop_pct", "mean", "std", "batch_size", "augment", "sampler"}


def config(recipe: Recipe) -> dict[str, Any]:
    return {
        "seed": recipe.seed,
        "model": recipe.model.model_dump(),
        "finetune": recipe.finetune.model_dump(),
        "data": recipe.data.model_dump(include=_DATA_KEYS),
        **ddp.config(),
    }


def device():
    return ddp.device()


def train_loader(data: SplitData, recipe: Recipe):
    """Shuffled, or class-balanced draws with replacement (data.sampler: balanced); shared with qat."""
    if ddp.is_distributed():  # under torchrun: this rank's shard (a balanced sampler is refused)
        ds = data.dataset("train", train=True)
        sampler = ddp.train_sampler(ds, recipe.seed, recipe.data.sampler)
    elif recipe.data.sampler == "shuffle":
        return data.loader("train", train=True)
    else:
        ds = data.dataset("train", train=True)
        sampler = balanced_sampler(ds.labels, recipe.seed)
    return make_loader(
        ds,
        recipe.data.batch_size,
        shuffle=True,
        num_workers=recipe.data.num_workers,
        seed=recipe.seed,
        sampler=sampler,
    )


def training_parts(model, data: SplitData, recipe: Recipe, cfg: FinetuneConfig | QatConfig, dev):
    """Train loader, optimiser, schedule and loss for finetune or qat, all from the recipe."""
    loader = train_loader(data, recipe)
    steps = len(loader) if cfg.max_batches_per_epoch is None else min(len(loader), cfg.max_batches_per_epoch)
    if recipe.data.sampler == "balanced" and cfg.class_weights == "balanced":
        log.warning("data.sampler and class_weights are both balanced: the imbalance is corrected twice")
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    criterion = build_criterion(cfg, class_counts(data.split["train"], len(data.classes))).to(dev)
    return loader, optimizer, scheduler, criterion


def train_model(model, data: SplitData, recipe: Recipe, cfg: FinetuneConfig | QatConfig, dev, freezer,
                **hooks: Any):
    """The one training call of finetune and qat: loaders, optimiser, schedule and loss from the recipe;
    ``hooks`` are fit()'s extra keywords (amp, on_epoch_start, eval_context, resume)."""
    loader, optimizer, scheduler, criterion = training_parts(model, data, recipe, cfg, dev)
    return fit(
        model,
        loader,
        data.loader("val"),
        epochs=cfg.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        device=dev,
        patience=cfg.patience,
        max_batches=cfg.max_batches_per_epoch,
        grad_clip_norm=cfg.grad_clip_norm,
        channels_last=cfg.channels_last,
        freezer=freezer,
        **hooks,
    )


def evaluation_metrics(model, data: SplitData, dev, out_dir, title: str) -> dict[str, Any]:
    """Val and test summaries for the manifest; metrics_test.json and confusion_test.png on disk."""
    val = evaluate(model, data.loader("val"), dev, description=f"{title} val")
    test = evaluate(model, data.loader("test"), dev, description=f"{title} test")
    val_summary = summary(classification_metrics(val["labels"], val["preds"], data.classes, val["top5"]))
    test_summary = write_eval_report(out_dir, "test", test, data.classes, title=f"{title}: test")
    return {"val_top1": val["top1"], "test_top1": test["top1"], "val": val_summary, "test": test_summary}


def run(ctx: StageContext) -> StageResult:
    import torch

    r, cfg = ctx.recipe, ctx.recipe.finetune
    seed_everything(r.seed)
    pre = preprocessing_from(r.data, r.model.arch)
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    from edgepipe.models.build import build_model

    model, weights_source = build_model(r.model, len(data.classes))
    dev = device()
    model.to(dev)
    freezer = freezer_for(model, r.model.arch, r.model.freeze.trainable_last, r.model.freeze.schedule)
    freeze = freezer.summary(model) if freezer is not None else None
    result = train_model(model, data, r, cfg, dev, freezer, amp=cfg.amp, resume=ctx.resume_state(name))
    if not ddp.is_main():  # rank 0 evaluates and writes the stage
        return StageResult()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    evals = evaluation_metrics(model, data, dev, ctx.out_dir, title=f"finetune {r.model.arch}")
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
        **evals,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "device": str(dev),
        "processes": ddp.world_size(),
        "weights_source": weights_source,
        "freeze": freeze,
    }
    log.info("finetune: val top-1 %.2f, test top-1 %.2f", evals["val_top1"], evals["test_top1"])
    return StageResult(outputs={"checkpoint": "model.pt", "history": "history.csv"}, metrics=metrics)
