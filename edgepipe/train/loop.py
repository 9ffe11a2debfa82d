"""train_one_epoch / evaluate / fit: the single loop finetune and QAT both use.

QAT reuses it as torchvision's references/classification/train_quantization.py reuses train.py: the only
QAT-specific part is an ``on_epoch_start`` hook that freezes observers and BatchNorm statistics.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from edgepipe.progress import track

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: int = -1
    best_val_top1: float = -1.0
    stopped_early: bool = False


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up then cosine decay to 0, stepped per batch."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
) -> dict[str, float]:
    import torch

    model.train()
    seen, loss_sum, correct, wait = 0, 0.0, 0, 0.0
    batches, total = _batches(loader, max_batches)
    t_wait = time.perf_counter()
    for images, labels in track(batches, description, total):
        wait += time.perf_counter() - t_wait
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=scaler is not None):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = labels.shape[0]
        seen += n
        loss_sum += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == labels).sum())
        t_wait = time.perf_counter()
    if seen == 0:
        return {"loss": float("nan"), "top1": float("nan"), "data_wait_s": 0.0}
    return {"loss": loss_sum / seen, "top1": 100.0 * correct / seen, "data_wait_s": wait}


def evaluate(model, loader, device, criterion=None, description: str = "eval") -> dict[str, Any]:
    """Top-1 (and loss) plus the raw predictions, so callers can compute agreement and confusion."""
    import torch

    model.eval()
    preds, labels_all, loss_sum = [], [], 0.0
    with torch.inference_mode():
        for images, labels in track(loader, description, len(loader)):
            logits = model(images.to(device))
            if criterion is not None:
                loss_sum += float(criterion(logits, labels.to(device))) * labels.shape[0]
            preds.append(logits.argmax(1).cpu())
            labels_all.append(labels)
    if not preds:
        return {"top1": float("nan"), "loss": float("nan"), "preds": [], "labels": []}
    p, y = torch.cat(preds), torch.cat(labels_all)
    return {
        "top1": 100.0 * float((p == y).float().mean()),
        "loss": loss_sum / len(y) if criterion is not None else float("nan"),
        "preds": p.tolist(),
        "labels": y.tolist(),
    }


def fit(
    model,
    train_loader,
    val_loader,
    *,
    epochs: int,
    optimizer,
    scheduler,
    criterion,
    device,
    patience: int,
    amp: bool = False,
    max_batches: int | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    start_epoch: int = 0,
    result: FitResult | None = None,
    eval_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> FitResult:
    """Train with early stopping on val top-1, keeping the best weights (in memory)."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if (amp and device.type == "cuda") else None
    result = result or FitResult()
    for epoch in range(start_epoch, epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        t0 = time.perf_counter()
        tr = train_one_epoch(
            model,
            train_loader,
            criterion,
            optimizer,
            scheduler,
            device,
            scaler,
            max_batches,
            description=f"epoch {epoch + 1}/{epochs} train",
        )
        with eval_context():
            va = evaluate(model, val_loader, device, criterion, description=f"epoch {epoch + 1}/{epochs} val")
        row = {
            "epoch": epoch + 1,
            "train_loss": tr["loss"],
            "train_top1": tr["top1"],
            "val_loss": va["loss"],
            "val_top1": va["top1"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "data_wait_s": tr["data_wait_s"],
        }
        result.history.append(row)
        log.info(
            "epoch %d/%d: train loss %.4f top1 %.2f | val loss %.4f top1 %.2f (%.0fs)",
            epoch + 1,
            epochs,
            tr["loss"],
            tr["top1"],
            va["loss"],
            va["top1"],
            row["seconds"],
        )
        if va["top1"] > result.best_val_top1:
            result.best_val_top1, result.best_epoch = va["top1"], epoch + 1
            result.best_state = copy.deepcopy(model.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if epoch + 1 - result.best_epoch >= patience:
            log.info("early stop: val top-1 has not improved for %d epochs", patience)
            result.stopped_early = True
            break
    return result
