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
