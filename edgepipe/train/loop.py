"""train_one_epoch / evaluate / fit: the single loop finetune and QAT both use.

QAT reuses it as torchvision's references/classification/train_quantization.py reuses train.py: the only
QAT-specific part is an ``on_epoch_start`` hook that freezes observers and BatchNorm statistics. Optimiser,
schedule, loss and freezing are built elsewhere (optim.py, losses.py, freeze.py) and handed in. Under torchrun
the same loop trains a DDP wrapper (distributed.py); per-epoch state for ``--resume`` is in resume.py.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from edgepipe.errors import RecipeError
from edgepipe.progress import track
from edgepipe.train import autotune, distributed, precision
from edgepipe.train import resume as resuming
from edgepipe.train.optim import as_schedule

if TYPE_CHECKING:
    from edgepipe.train.freeze import Freezer

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: int = -1
    best_val_top1: float = -1.0
    stopped_early: bool = False
    speed: dict[str, Any] | None = None  # how it trained (layout, compile, autocast) and why: autotune.py


def _batches(loader, max_batches: int | None):
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    return islice(loader, total), total


def train_one_epoch(
    model,
    loader,
    criterion,
    optimizer,
    scheduler,
    device,
    scaler=None,
    max_batches=None,
    description: str = "train",
    grad_clip_norm: float | None = None,
    keep_eval: Sequence[Any] = (),
    amp_dtype=None,
    channels_last: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; ``scheduler`` is stepped per batch (an LrSchedule or a torch scheduler).

    ``keep_eval`` modules (frozen blocks) stay in eval mode, so their BatchNorm statistics do not move.
    ``amp_dtype`` is the autocast dtype (float16 when only a ``scaler`` is given; None: float32), and
    ``channels_last`` converts each batch to NHWC for a model already converted (see precision.py).
    """
    import torch

    schedule = as_schedule(scheduler)
    if amp_dtype is None and scaler is not None:
        amp_dtype = torch.float16
    model.train()
    for module in keep_eval:
        module.eval()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    seen, loss_sum, correct, wait = 0, 0.0, 0, 0.0
    batches, total = _batches(loader, max_batches)
    t_wait = time.perf_counter()
    for images, labels in track(batches, description, total):
        wait += time.perf_counter() - t_wait
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
            optimizer.step()
        schedule.step_batch()
        n = labels.shape[0]
        seen += n
        loss_sum += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == labels).sum())
        t_wait = time.perf_counter()
    seen, loss_sum, correct = distributed.all_reduce_sums(seen, loss_sum, correct)  # all ranks' batches
    if seen == 0:
        return {"loss": float("nan"), "top1": float("nan"), "data_wait_s": 0.0}
    return {"loss": loss_sum / seen, "top1": 100.0 * correct / seen, "data_wait_s": wait}


def evaluate(model, loader, device, criterion=None, description: str = "eval") -> dict[str, Any]:
    """Top-1, top-5 (top-k with k = min(5, classes)) and loss, plus the raw predictions and labels, so
    callers can compute agreement, per-class metrics and confusion."""
    import torch

    model.eval()
    preds, labels_all, loss_sum, correct5 = [], [], 0.0, 0
    with torch.inference_mode():
        for images, labels in track(loader, description, len(loader)):
            logits = model(images.to(device))
            if criterion is not None:
                loss_sum += float(criterion(logits, labels.to(device))) * labels.shape[0]
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
            correct5 += int((top == labels[:, None]).any(1).sum())
            preds.append(top[:, 0])
            labels_all.append(labels)
    if not preds:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "preds": [], "labels": []}
    p, y = torch.cat(preds), torch.cat(labels_all)
    return {
        "top1": 100.0 * float((p == y).float().mean()),
        "top5": 100.0 * correct5 / len(y),
        "loss": loss_sum / len(y) if criterion is not None else float("nan"),
        "preds": p.tolist(),
        "labels": y.tolist(),
    }


@dataclass(frozen=True)
class FitSettings:
    """How fit trains: the length, early stopping and speed switches of a finetune or qat section.

    ``amp``, ``channels_last`` and ``compile`` set to ``auto`` are decided by timing a few steps of each
    candidate (autotune.py); ``max_batches`` caps each epoch (smoke runs)."""

    epochs: int
    patience: int
    amp: str = "off"
    channels_last: str = "off"
    compile: str = "off"
    max_batches: int | None = None
    grad_clip_norm: float | None = None

    def check(self, device) -> None:
        """An impossible explicit setting fails before any measuring."""
        precision.amp_dtype(self.amp, device)
        precision.channels_last(self.channels_last, device)
        if self.compile not in precision.LAYOUT_SETTINGS:
            choices = ", ".join(precision.LAYOUT_SETTINGS)
            raise RecipeError(f"compile: {self.compile!r} is not one of {choices}; fix: use one of them")

    def steps(self, loader) -> int:
        return len(loader) if self.max_batches is None else min(len(loader), self.max_batches)


@dataclass(frozen=True)
class FitHooks:
    """What a stage adds to the loop: QAT freezes observers and BatchNorm at an epoch's start and validates
    with its observers paused; ``on_epoch_end`` sees each epoch's history row."""

    on_epoch_start: Callable[[int], None] | None = None
    on_epoch_end: Callable[[int, dict], None] | None = None
    eval_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class _Run:
    """What every epoch of one fit shares: the parts handed in and the speed decision's consequences."""

    model: Any
    train_loader: Any
    val_loader: Any
    optimizer: Any
    schedule: Any
    criterion: Any
    device: Any
    settings: FitSettings
    hooks: FitHooks
    freezer: Freezer | None
    decision: autotune.Decision
    scaler: Any
    net: Any = None  # what trains: the model, DDP-wrapped and compiled as decided
    wrapped_at: int | None = None  # frozen blocks when ``net`` was wrapped

    @property
    def keep_eval(self) -> Sequence[Any]:
        return self.freezer.frozen if self.freezer is not None else ()


def fit(
    model,
    train_loader,
    val_loader,
    *,
    optimizer,
    scheduler,
    criterion,
    device,
    settings: FitSettings,
    hooks: FitHooks | None = None,
    freezer: Freezer | None = None,
    resume: resuming.ResumeState | None = None,
) -> FitResult:
    """Train with early stopping on val top-1, keeping the best weights (in memory).

    ``scheduler`` steps per batch and, for a plateau schedule, per epoch on val top-1 (see optim.py);
    ``freezer`` sets the trainable blocks at each epoch's start (see freeze.py); ``resume`` continues from
    a saved state and saves one after every epoch (see resume.py). ``model`` is the plain module: under
    torchrun it is trained through DDP and validated on rank 0 (see distributed.py). How it trains (layout,
    compile, autocast) and why is in ``result.speed``.
    """
    import torch

    settings.check(device)
    hooks = hooks or FitHooks()
    result = FitResult()
    keep_eval = freezer.frozen if freezer is not None else ()
    decision = _speed_decision(model, optimizer, criterion, train_loader, device, settings, keep_eval, resume)
    result.speed = decision.record
    amp_dtype = decision.candidate.dtype()
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None  # bf16 needs no scaling
    if decision.candidate.channels_last:  # before any DDP wrap
        model.to(memory_format=torch.channels_last)
    schedule = as_schedule(scheduler)
    run = _Run(model, train_loader, val_loader, optimizer, schedule, criterion, device, settings, hooks,
               freezer, decision, scaler)
    start_epoch = _restore(run, resume, result)
    for epoch in range(start_epoch, settings.epochs):
        row = _epoch(run, epoch)
        result.history.append(row)
        _keep_best(result, model, row)
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch, row)
        if epoch + 1 - result.best_epoch >= settings.patience:
            log.info("early stop: val top-1 has not improved for %d epochs", settings.patience)
            result.stopped_early = True
        if resume is not None:
            parts = (model, optimizer, run.schedule, scaler, train_loader, result)
            resume.save(resuming.capture(epoch + 1, settings.epochs, *parts))
        if result.stopped_early:
            break
    if decision.candidate.channels_last:  # handed back NCHW: best_state loads into it, checkpoints stay NCHW
        model.to(memory_format=torch.contiguous_format)
    return result


def _speed_decision(model, optimizer, criterion, train_loader, device, settings: FitSettings,
                    keep_eval: Sequence[Any], resume: resuming.ResumeState | None) -> autotune.Decision:
    """A resumed run trains as the killed run did; otherwise autotune decides (fixed settings as given)."""
    saved = resume.state.get("speed") if resume is not None and resume.state is not None else None
    if saved and "chosen" in saved:
        why = f"resumed: trains as the saved run did ({saved['chosen']})"
        return autotune.Decision(autotune.Candidate.from_record(saved),
                                 {**saved, "source": "resumed", "reason": why})
    return autotune.choose(
        model, optimizer, criterion, train_loader, device,
        autotune.Settings(channels_last=settings.channels_last, compile=settings.compile, amp=settings.amp),
        planned_steps=settings.epochs * settings.steps(train_loader),
        keep_eval=keep_eval,
    )


def _restore(run: _Run, resume: resuming.ResumeState | None, result: FitResult) -> int:
    """The epoch to start at: 0, or after the saved state's last (the end, if it had stopped early)."""
    if resume is None or resume.state is None:
        return 0
    parts = (run.model, run.optimizer, run.schedule, run.scaler, run.train_loader, result)
    start_epoch = resuming.restore(resume.state, *parts)
    return run.settings.epochs if result.stopped_early else start_epoch


def _trainee(run: _Run) -> Any:
    """The module to train this epoch: DDP syncs only the parameters trainable when it wraps, so the model is
    wrapped again (and compiled again: a new wrapper is a new graph) whenever the frozen blocks change."""
    frozen = len(run.freezer.frozen) if run.freezer is not None else 0
    if run.wrapped_at != frozen:
        run.net, run.wrapped_at = distributed.wrap(run.model, run.device), frozen
        if run.decision.candidate.compile:
            run.net = autotune.compile_module(run.net)
    return run.net


def _epoch(run: _Run, epoch: int) -> dict[str, float]:
    """Train one epoch, validate, step an epoch schedule; the epoch's history row."""
    s = run.settings
    if run.freezer is not None:
        run.freezer.apply(epoch)
    net = _trainee(run)
    sampler = getattr(run.train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
        sampler.set_epoch(epoch)
    if run.hooks.on_epoch_start is not None:
        run.hooks.on_epoch_start(epoch)
    label = f"epoch {epoch + 1}/{s.epochs}"
    t0 = time.perf_counter()
    tr = train_one_epoch(
        net,
        run.train_loader,
        run.criterion,
        run.optimizer,
        run.schedule,
        run.device,
        run.scaler,
        s.max_batches,
        description=f"{label} train",
        grad_clip_norm=s.grad_clip_norm,
        keep_eval=run.keep_eval,
        amp_dtype=run.decision.candidate.dtype(),
        channels_last=run.decision.candidate.channels_last,
    )
    va = _validate(run, f"{label} val")
    lr = run.optimizer.param_groups[0]["lr"]  # the lr this epoch ended with, before a plateau cut
    run.schedule.step_epoch(va["top1"])
    row = {
        "epoch": epoch + 1,
        "train_loss": tr["loss"],
        "train_top1": tr["top1"],
        "val_loss": va["loss"],
        "val_top1": va["top1"],
        "val_top5": va["top5"],
        "lr": lr,
        "seconds": time.perf_counter() - t0,
        "data_wait_s": tr["data_wait_s"],
    }
    log.info(
        "%s: train loss %.4f top1 %.2f | val loss %.4f top1 %.2f (%.0fs)",
        label, tr["loss"], tr["top1"], va["loss"], va["top1"], row["seconds"],
    )
    return row


def _validate(run: _Run, description: str) -> dict[str, float]:
    """Rank 0 validates the plain model on the full val set; every rank gets its numbers."""
    va = None
    if distributed.is_main():
        with run.hooks.eval_context():
            va = evaluate(run.model, run.val_loader, run.device, run.criterion, description)
        va = {k: va[k] for k in ("top1", "top5", "loss")}
    return distributed.broadcast_object(va)


def _keep_best(result: FitResult, model, row: dict[str, float]) -> None:
    if row["val_top1"] > result.best_val_top1:
        result.best_val_top1, result.best_epoch = row["val_top1"], row["epoch"]
        result.best_state = copy.deepcopy(model.state_dict())
