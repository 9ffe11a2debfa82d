"""The recipe-driven training call finetune and qat share (as torchvision's train_quantization.py imports
train.py's loop): loaders, optimiser, schedule and loss from the recipe, then fit(); and their evaluation."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.data.datasets import make_loader
from edgepipe.data.loaders import SplitData
from edgepipe.data.split import class_counts
from edgepipe.recipe import FinetuneConfig, QatConfig, Recipe
from edgepipe.train import distributed as ddp
from edgepipe.train.loop import FitHooks, FitSettings, evaluate, fit
from edgepipe.train.losses import balanced_sampler, build_criterion
from edgepipe.train.metrics import classification_metrics, summary, write_eval_report
from edgepipe.train.optim import build_optimizer, build_scheduler
from edgepipe.train.resume import ResumeState

log = logging.getLogger(__name__)


def device():
    """This process's training device (its own GPU under torchrun, else CUDA when present, else CPU)."""
    return ddp.device()


def train_loader(data: SplitData, recipe: Recipe):
    """Shuffled, or class-balanced draws with replacement (data.sampler: balanced)."""
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
    from edgepipe.models.heads import training_loss

    criterion = build_criterion(cfg, class_counts(data.split["train"], len(data.classes)))
    criterion = training_loss(recipe.model, criterion).to(dev)  # + the margin of an arcmargin head
    return loader, optimizer, scheduler, criterion


def fit_settings(cfg: FinetuneConfig | QatConfig) -> FitSettings:
    """The loop's settings from a finetune or qat section (QAT always trains in float32: no amp key)."""
    return FitSettings(
        epochs=cfg.epochs,
        patience=cfg.patience,
        amp=cfg.amp if isinstance(cfg, FinetuneConfig) else "off",
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        max_batches=cfg.max_batches_per_epoch,
        grad_clip_norm=cfg.grad_clip_norm,
    )


def train_model(model, data: SplitData, recipe: Recipe, cfg: FinetuneConfig | QatConfig, dev, freezer,
                hooks: FitHooks | None = None, resume: ResumeState | None = None):
    """The one training call of finetune and qat: loaders, optimiser, schedule and loss from the recipe."""
    loader, optimizer, scheduler, criterion = training_parts(model, data, recipe, cfg, dev)
    return fit(
        model,
        loader,
        data.loader("val"),
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        device=dev,
        settings=fit_settings(cfg),
        hooks=hooks,
        freezer=freezer,
        resume=resume,
    )


def evaluation_metrics(model, data: SplitData, dev, out_dir, title: str) -> dict[str, Any]:
    """Val and test summaries for the manifest; metrics_test.json and confusion_test.png on disk."""
    val = evaluate(model, data.loader("val"), dev, description=f"{title} val")
    test = evaluate(model, data.loader("test"), dev, description=f"{title} test")
    val_summary = summary(classification_metrics(val["labels"], val["preds"], data.classes, val["top5"]))
    test_summary = write_eval_report(out_dir, "test", test, data.classes, title=f"{title}: test")
    return {"val_top1": val["top1"], "test_top1": test["top1"], "val": val_summary, "test": test_summary}
