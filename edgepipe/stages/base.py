"""The stage contract (after Olive's passes): a StageSpec (name, needs, outputs, config slice, ``run``) and
the StageContext ``run`` receives."""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.artifacts import StageResult
from edgepipe.errors import RecipeError, StageError
from edgepipe.recipe import Recipe


@dataclass
class StageContext:
    recipe: Recipe
    out_dir: Path  # the stage's (temporary) folder: write everything here
    inputs: dict[str, Path]  # named files produced by earlier stages
    run_dir: Path
    key: str = ""  # the stage's cache key: training state saved for --resume is tied to it
    resume: bool = False  # build --resume: continue from the state in partial_dir
    partial_dir: Path | None = None  # per-epoch training state (finetune, qat); None: not saved

    def resume_state(self, stage: str):
        """The stage's saved training state (see train/resume.py); None when the caller gave no folder."""
        if self.partial_dir is None:
            return None
        from edgepipe.train.resume import ResumeState

        return ResumeState(self.partial_dir, self.key, stage, self.resume)

    def input(self, name: str) -> Path:
        try:
            return self.inputs[name]
        except KeyError:
            raise StageError(
                f"input '{name}' is missing (its stage has not run); fix: run the full pipeline once, "
                "without --only"
            ) from None


@dataclass(frozen=True)
class StageSpec:
    """A stage, declared once (``STAGE`` in its module): the pipeline derives the order of stages, the names a
    recipe may list and each stage's cache key from these declarations, and keeps no list of its own."""

    name: str
    needs: tuple[str, ...]  # named inputs from earlier stages, all required
    outputs: tuple[str, ...]  # the named files it may hand on (run() returns a subset: IR only with OpenVINO)
    config: Callable[[Recipe], dict[str, Any]]  # every recipe key its result depends on: hashed into its key
    run: Callable[[StageContext], StageResult]
    optional: tuple[str, ...] = ()  # named inputs used when an earlier stage made them
    distributed: bool = False  # runs on every torchrun rank (the pipeline runs other stages on rank 0 only)
    always: bool = False  # runs whatever the recipe lists (split); a recipe cannot name it
    # Refuses, before any stage runs, a recipe this stage cannot serve (raises RecipeError naming the fix).
    check: Callable[[Recipe], None] | None = None


# data.* keys a training stage sees only through its split input (the split stage's own cache key holds them):
# a training stage hashes every other data key, so a key added to DataConfig reaches its cache key by default.
SPLIT_DATA_KEYS = frozenset({"dataset", "root", "val_fraction", "test_fraction", "limit_per_class"})
# ... and those qat, export, ptq and bench read from the finetune checkpoint's preprocessing instead
PREPROCESSING_DATA_KEYS = frozenset({"image_size", "crop_pct", "mean", "std"})


def check_names(key: str, value: str | Sequence[str], known: Sequence[str]) -> None:
    """A recipe key whose values a registry defines (the recipe, a low layer, cannot read it): a stage's
    ``check`` refuses an unknown name before any stage runs, naming the key and the fix."""
    named = [(key, value)] if isinstance(value, str) else [(f"{key}.{i}", v) for i, v in enumerate(value)]
    for where, name in named:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"use one of {', '.join(known)}"
            raise RecipeError(f"{where}: {name!r} is not one of {', '.join(known)}; fix: {hint}")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
