"""Freezing: train only the last N blocks of the backbone (plus everything outside them: pooling, head).

The blocks come from the registry (``ModelSpec.blocks``), so the same count means the same layers in the
float model and in its fused, fake-quantized QAT twin. Frozen blocks get ``requires_grad = False`` and stay
in eval mode while frozen (their BatchNorm statistics, or the folded BN of a QAT ConvBn, must not drift with
batches they no longer learn from). A schedule unfreezes more blocks from given epochs (gradual unfreezing,
ULMFiT-style); the recipe validates that it never re-freezes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from edgepipe.errors import ModelError
from edgepipe.models.registry import get_spec

log = logging.getLogger(__name__)

Trainable = int | str  # a block count or "all"


class Freezer:
    """Which blocks train at each epoch: ``apply(epoch)`` sets it; ``frozen`` are the blocks kept in eval."""

    def __init__(
        self,
        blocks: list[Any],
        trainable_last: Trainable,
        schedule: Mapping[int, Trainable] | None = None,
        key: str = "model.freeze.trainable_last",
        arch: str = "the model",
    ):
        self.blocks, self.trainable_last = list(blocks), trainable_last
        self.schedule = dict(sorted((schedule or {}).items()))
        for where, n in [
            (key, trainable_last),
            *((f"{key} (schedule epoch {e})", n) for e, n in self.schedule.items()),
        ]:
            if n != "all" and n > len(self.blocks):
                raise ModelError(
                    f"{where}: {n} blocks, but {arch} has {len(self.blocks)}; "
                    f"fix: use 0..{len(self.blocks)} or all"
                )
        self._n_frozen = 0  # blocks start trainable, as built

    def trainable_at(self, epoch: int) -> Trainable:
        n = self.trainable_last
        for start, count in self.schedule.items():
            if epoch >= start:
                n = count
        return n

    def frozen_count(self, epoch: int) -> int:
        n = self.trainable_at(epoch)
        return 0 if n == "all" else len(self.blocks) - int(n)

    @property
    def frozen(self) -> list[Any]:
        return self.blocks[: self._n_frozen]

    def apply(self, epoch: int) -> None:
        """Freeze the first blocks (or release some, by the schedule) for ``epoch``; a no-op if unchanged."""
        k = self.frozen_count(epoch)
        if k == self._n_frozen:
            return
        for i, block in enumerate(self.blocks):
            if (i < k) != (i < self._n_frozen):
                # modules a variant added to a block (models/attention.py) have no pretrained weights: they
                # train even while their block is frozen (they hold no BatchNorm, so eval mode is harmless)
                fresh = {id(p) for m in block.modules() if getattr(m, "edgepipe_fresh", False)
                         for p in m.parameters()}
                for p in block.parameters():
                    p.requires_grad_(i >= k or id(p) in fresh)
        log.info(
            "epoch %d: training the last %s of %d blocks",
            epoch + 1,
            self.trainable_at(epoch),
            len(self.blocks),
        )
        self._n_frozen = k
        self.hold_eval()

    def hold_eval(self) -> None:
        """Put the frozen blocks back in eval mode (after ``model.train()`` switched everything to train)."""
        for block in self.frozen:
            block.eval()

    def summary(self, model: Any) -> dict[str, Any]:
        params = list(model.parameters())
        return {
            "blocks": len(self.blocks),
            "trainable_last": self.trainable_last,
            "schedule": self.schedule,
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params),
        }


def freezer_for(
    model: Any,
    arch: str,
    trainable_last: Trainable,
    schedule: Mapping[int, Trainable] | None = None,
    key: str = "model.freeze.trainable_last",
) -> Freezer | None:
    """A Freezer over ``model``'s registry blocks, applied for epoch 0; None when nothing is ever frozen."""
    if trainable_last == "all" and not schedule:
        return None
    spec = get_spec(arch)
    if spec.blocks is None:
        raise ModelError(
            f"{key}: {arch} does not list its blocks in the model registry; "
            "fix: remove model.freeze, or give its ModelSpec a blocks accessor"
        )
    freezer = Freezer(spec.blocks(model), trainable_last, schedule, key=key, arch=arch)
    freezer.apply(0)
    return freezer
