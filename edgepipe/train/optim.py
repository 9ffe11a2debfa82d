"""Optimisers and learning-rate schedules from a recipe's finetune/qat section.

A schedule runs at one of two clocks: per batch (linear warm-up, then cosine, step or cosine with restarts,
all written as one LambdaLR factor of the global step, so fractional epochs are exact) or per epoch on
validation top-1 (plateau, which also gets a per-batch warm-up first). ``LrSchedule`` hides which: the loop
calls ``step_batch()`` after every optimiser step and ``step_epoch(val_top1)`` after every validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from edgepipe.recipe import FinetuneConfig, QatConfig

TrainConfig = FinetuneConfig | QatConfig


def build_optimizer(params: Iterable[Any], cfg: TrainConfig):
    """AdamW, Adam or SGD over ``params``.

    Pass every parameter, frozen ones included: optimisers skip parameters without a gradient, so blocks
    that gradual unfreezing releases later are already in the optimiser.
    """
    import torch

    params = list(params)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def _cosine_restarts(step: int, first_cycle: int, mult: int) -> float:
    """SGDR (Loshchilov & Hutter): cosine from 1 to 0 over a cycle, restart, each cycle ``mult`` x longer."""
    cycle = first_cycle
    while step >= cycle:
        step -= cycle
        cycle *= mult
    return 0.5 * (1 + math.cos(math.pi * step / cycle))


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The lr multiplier after ``step`` optimiser steps: warm-up, then the per-batch schedule from 1.0."""
    spe = max(1, steps_per_epoch)
    warm = spe * cfg.warmup_epochs

    def main(step: int) -> float:
        if cfg.scheduler == "cosine":
            return _cosine(step, spe * cfg.epochs - warm)
        if cfg.scheduler == "step":
            return cfg.gamma ** (step // (spe * cfg.step_size))
        if cfg.scheduler == "cosine_restarts":
            return _cosine_restarts(step, spe * cfg.t0_epochs, cfg.t_mult)
        return 1.0  # plateau: the per-epoch scheduler owns the lr after warm-up

    def factor(step: int) -> float:
        return _warmup(step, warm) if step < warm else main(step - warm)

    return factor


class LrSchedule:
    """Steps the torch schedulers of one run at their own clock (see the module docstring)."""

    def __init__(self, per_batch=None, per_epoch=None, warmup_steps: int = 0):
        self.per_batch, self.per_epoch, self.warmup_steps = per_batch, per_epoch, warmup_steps
        self.steps = 0

    def step_batch(self) -> None:
        self.steps += 1
        # With a per-epoch scheduler the per-batch one is only the warm-up: stepping it later would
        # overwrite the plateau's reductions with base_lr * 1.0.
        if self.per_batch is not None and (self.per_epoch is None or self.steps <= self.warmup_steps):
            self.per_batch.step()

    def step_epoch(self, val_top1: float) -> None:
        if self.per_epoch is not None and self.steps >= self.warmup_steps:
            self.per_epoch.step(val_top1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "per_batch": None if self.per_batch is None else self.per_batch.state_dict(),
            "per_epoch": None if self.per_epoch is None else self.per_epoch.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        for name in ("per_batch", "per_epoch"):
            if getattr(self, name) is not None and state[name] is not None:
                getattr(self, name).load_state_dict(state[name])


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LrSchedule:
    """The recipe's schedule for ``optimizer`` with ``steps_per_epoch`` optimiser steps per epoch."""
    import torch

    lambda_lr = torch.optim.lr_scheduler.LambdaLR
    if cfg.scheduler != "plateau":
        return LrSchedule(per_batch=lambda_lr(optimizer, lr_factor(cfg, steps_per_epoch)))
    warm = max(1, steps_per_epoch) * cfg.warmup_epochs
    warmup = lambda_lr(optimizer, lr_factor(cfg, steps_per_epoch)) if warm else None
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    return LrSchedule(per_batch=warmup, per_epoch=plateau, warmup_steps=warm)


def as_schedule(scheduler) -> LrSchedule:
    """Accept what callers of fit() pass: an LrSchedule, a plain torch scheduler, or None."""
    import torch

    if isinstance(scheduler, LrSchedule):
        return scheduler
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return LrSchedule(per_epoch=scheduler)
    return LrSchedule(per_batch=scheduler)
