"""Per-epoch training state, so that ``edgepipe build --resume`` continues a killed finetune or qat exactly.

A stage publishes its folder only when it has finished, so a killed stage leaves nothing there. Its training
state lives beside it instead, in ``<run>/<stage>.partial/state.pt``, rewritten atomically after every epoch
and removed by the pipeline once the stage is published. The state holds everything the next epoch depends
on: weights (QAT observers and fake-quant scales are buffers, so they travel with them), optimiser, lr
schedule, AMP scaler, the RNG states of every rank (torch, CUDA, numpy, random, the train loader's and its
sampler's generators), history, early-stopping state and the best weights. Freezing, gradual unfreezing and
the QAT BatchNorm/observer freezes are functions of the epoch, re-applied by fit at the resumed epoch.

The state records the stage's cache key: a state written under another recipe, input or package version
is never resumed. Bit-exact resume needs ``data.num_workers: 0``: with worker processes the augmentation
RNG lives in the workers and is reseeded differently after a restart (weights, optimiser and sample order
still continue exactly).
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_path
from edgepipe.errors import ModelError, StageError
from edgepipe.train import distributed

log = logging.getLogger(__name__)

STATE = "state.pt"
FORMAT = 1


class ResumeState:
    """The training state of one stage run: what was found on disk (``state``) and where to save it."""

    def __init__(self, folder: Path, key: str, stage: str, resume: bool):
        self.folder, self.key, self.stage = Path(folder), key, stage
        self.state: dict[str, Any] | None = self._find(resume)

    def _find(self, resume: bool) -> dict[str, Any] | None:
        path = self.folder / STATE
        if not path.exists():
            if resume:
                log.info("%s: no saved training state to resume (%s); starting fresh", self.stage, path)
            return None
        from edgepipe.models.checkpoint import safe_load

        try:
            state = safe_load(path)
        except ModelError as exc:  # a state we cannot read is a state we cannot resume
            log.warning("%s: unreadable training state %s (%s); starting fresh", self.stage, path, exc)
            return None
        if state.get("format") != FORMAT or state.get("key") != self.key:
            if resume:
                log.info(
                    "%s: the training state in %s was written by a different recipe, input or package "
                    "version; starting fresh",
                    self.stage,
                    self.folder,
                )
            return None
        where = f"after epoch {state['epoch']}/{state['epochs']}"
        if not resume:
            # Training is seeded, so a fresh run reaches the same result; --resume only saves the time.
            log.warning(
                "%s: a killed run left training state %s in %s; starting fresh (add --resume to continue it)",
                self.stage,
                where,
                self.folder,
            )
            return None
        if state["world_size"] != distributed.world_size():
            raise StageError(
                f"{self.stage}: the training state in {self.folder} was saved by {state['world_size']} "
                f"process(es), this run has {distributed.world_size()}; fix: resume with the same torchrun "
                "--nproc_per_node, or rerun without --resume"
            )
        log.info("%s: resuming %s from %s", self.stage, where, self.folder)
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Rank 0 writes the state atomically (a kill mid-write keeps the previous epoch's)."""
        if not distributed.is_main():
            return
        import torch

        state = {"format": FORMAT, "key": self.key, **state}
        with atomic_path(self.folder / STATE) as tmp:
            torch.save(state, tmp)


def partial_dir(stage_dir: Path) -> Path:
    """Where a stage's training state lives while it runs: beside the folder it publishes."""
    stage_dir = Path(stage_dir)
    return stage_dir.with_name(f"{stage_dir.name}.partial")


def discard(stage_dir: Path) -> None:
    shutil.rmtree(partial_dir(stage_dir), ignore_errors=True)


def _generators(loader: Any) -> list[Any]:
    """The loader's generator (base seed, RandomSampler order) and a sampler's own one (balanced)."""
    gens = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    return [g for g in gens if g is not None]


def _plain(state: tuple) -> tuple:
    """numpy's legacy RNG state, its key array as a list of ints (weights_only loading refuses arrays)."""
    name, keys, *rest = state
    return (name, keys.tolist(), *rest)


def rng_states(loader: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": _plain(np.random.get_state()),  # plain types: the state is read with weights_only
        "python": random.getstate(),
        "loader": [g.get_state() for g in _generators(loader)],
    }


def set_rng_states(states: dict[str, Any], loader: Any) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(states["python"])
    for g, s in zip(_generators(loader), states["loader"], strict=True):
        g.set_state(s)


def capture(epoch: int, epochs: int, model, optimizer, schedule, scaler, loader, result) -> dict[str, Any]:
    """The state after ``epoch`` epochs; a collective under DDP (every rank's RNG states are gathered)."""
    return {
        "epoch": epoch,
        "epochs": epochs,
        "world_size": distributed.world_size(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": distributed.gather_objects(rng_states(loader)),
        "speed": result.speed,  # how it trained (autotune's choice): a resumed run trains the same way
        "result": {
            "history": result.history,
            "best_state": result.best_state,
            "best_epoch": result.best_epoch,
            "best_val_top1": result.best_val_top1,
            "stopped_early": result.stopped_early,
        },
    }


def restore(state: dict[str, Any], model, optimizer, schedule, scaler, loader, result) -> int:
    """Load ``state`` into the live training objects; returns the epoch to continue from."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"][distributed.rank()], loader)
    for name, value in state["result"].items():
        setattr(result, name, value)
    return state["epoch"]
