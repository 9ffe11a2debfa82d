"""Losses, and the remedies for class imbalance: class weights in the loss, or a balanced sampler.

Both remedies are derived from the train split's class counts. Use one of them: weighting the loss and
also drawing classes evenly corrects the imbalance twice (the stages log a warning when both are set).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from edgepipe.errors import StageError
from edgepipe.recipe import FinetuneConfig, QatConfig

log = logging.getLogger(__name__)


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """``n / (classes * count)`` per class (scikit-learn's 'balanced'); 0 for a class absent from train."""
    present = [c for c in counts if c > 0]
    n, k = sum(present), len(present)
    return [n / (k * c) if c > 0 else 0.0 for c in counts]


@functools.cache
def _focal_loss_class():
    """Defined on first use so that importing edgepipe (e.g. for ``--help``) does not import torch."""
    import torch
    import torch.nn.functional as F

    class FocalLoss(torch.nn.Module):
        """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_target)^gamma.

        Confident, correct samples contribute little, so training concentrates on hard and rare ones.
        With gamma = 0 it equals ``nn.CrossEntropyLoss`` with the same weight and label smoothing
        (a weighted mean divides by the summed weights of the targets, as torch does).
        """

        def __init__(self, gamma: float = 2.0, weight=None, label_smoothing: float = 0.0):
            super().__init__()
            self.gamma, self.label_smoothing = gamma, label_smoothing
            self.register_buffer("weight", weight)

        def forward(self, logits, target):
            logits = logits.float()
            ce = F.cross_entropy(
                logits, target, weight=self.weight, label_smoothing=self.label_smoothing, reduction="none"
            )
            p_target = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
            loss = (1 - p_target).clamp(min=0).pow(self.gamma) * ce
            denom = self.weight[target].sum() if self.weight is not None else target.new_tensor(len(target))
            return loss.sum() / denom.clamp(min=1e-12)

    return FocalLoss


def __getattr__(name: str) -> Any:
    if name == "FocalLoss":
        return _focal_loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def focal_loss(gamma: float = 2.0, weight=None, label_smoothing: float = 0.0):
    return _focal_loss_class()(gamma=gamma, weight=weight, label_smoothing=label_smoothing)


def build_criterion(cfg: FinetuneConfig | QatConfig, train_counts: Sequence[int] | None = None):
    """The recipe's loss; ``train_counts`` (images per class in train) is needed for balanced weights."""
    import torch

    weight = None
    if cfg.class_weights == "balanced":
        if train_counts is None:
            raise StageError(
                "class_weights: balanced needs the train split's class counts; fix: pass train_counts"
            )
        weight = torch.tensor(balanced_class_weights(train_counts), dtype=torch.float32)
    if cfg.loss == "focal":
        return focal_loss(cfg.focal_gamma, weight, cfg.label_smoothing)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def balanced_sampler(labels: Sequence[int], seed: int) -> Any:
    """Draws ``len(labels)`` samples per epoch, with replacement, each class equally likely."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    counts: dict[int, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=g)
