"""The stage contract (after Olive's passes): a name, its inputs, its config slice, and ``run``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgepipe.artifacts import StageResult
from edgepipe.errors import StageError
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


class Stage(Protocol):
    name: str
    needs: tuple[str, ...]  # names of inputs from earlier stages

    def config(self, recipe: Recipe) -> dict[str, Any]:
        """The part of the recipe this stage depends on (hashed into its cache key)."""

    def run(self, ctx: StageContext) -> StageResult: ...


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
