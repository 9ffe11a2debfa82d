"""Loaders over a written split, shared by every stage that reads images."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from edgepipe.data.datasets import SplitDataset, make_loader, read_split, source_for
from edgepipe.data.transforms import eval_transform, train_transform
from edgepipe.recipe import DataConfig

if TYPE_CHECKING:
    import numpy as np

    from edgepipe.models.preprocessing import Preprocessing


class SplitData:
    """The split file, its source, and loaders for its parts with the model's preprocessing."""

    def __init__(self, split_path: Path, cfg: DataConfig, preprocessing: Preprocessing, seed: int):
        self.split = read_split(split_path)
        self.classes: list[str] = self.split["classes"]
        self.source = source_for(self.split)
        self.cfg, self.pre, self.seed = cfg, preprocessing, seed

    def dataset(self, part: str, train: bool = False) -> SplitDataset:
        tf = train_transform(self.pre, self.cfg.augment) if train else eval_transform(self.pre)
        return SplitDataset(self.source, self.split[part], tf)

    def loader(self, part: str, train: bool = False, batch_size: int | None = None):
        return make_loader(
            self.dataset(part, train),
            batch_size or self.cfg.batch_size,
            shuffle=train,
            num_workers=self.cfg.num_workers,
            seed=self.seed,
        )

    def arrays(self, part: str, limit: int | None = None, indices: list[int] | None = None):
        """The eval-preprocessed images of a part as one float32 NCHW array (+ labels): for runtimes.
        ``indices``: only those samples, in that order (else the first ``limit``, else all)."""
        import numpy as np
        import torch

        ds = self.dataset(part)
        if indices is None:
            indices = list(range(len(ds) if limit is None else min(limit, len(ds))))
        xs, ys = [], []
        for x, y in make_loader(torch.utils.data.Subset(ds, indices), 256, False, self.cfg.num_workers, 0):
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys)

    def calibration(self, images: int) -> tuple[list[int], np.ndarray]:
        """PTQ calibration: a sample of ``images`` train images seeded by the recipe's seed, in split order,
        eval-preprocessed (the indices into the train part, and the float32 NCHW array)."""
        n_train = len(self.split["train"])
        idx = sorted(random.Random(self.seed).sample(range(n_train), min(images, n_train)))
        return idx, self.arrays("train", indices=idx)[0]
