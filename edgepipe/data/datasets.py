"""torch Datasets and loaders over a written split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepipe.data.sources import Source, open_source


class SplitDataset:
    """A map-style dataset of (image tensor, label) for one part of a split."""

    def __init__(self, source: Source, samples: list[tuple[str, int]], transform):
        self.source, self.samples, self.transform = source, samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        ref, label = self.samples[i]
        return self.transform(self.source.load(ref)), label

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]


def read_split(path: Path) -> dict[str, Any]:
    split = json.loads(Path(path).read_text())
    for part in ("train", "val", "test"):
        split[part] = [tuple(s) for s in split[part]]
    return split


def source_for(split: dict[str, Any]) -> Source:
    src = split["source"]
    return open_source(src.get("dataset"), Path(src["root"]) if src.get("root") else None)


def make_loader(dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, sampler=None):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        generator=g,
        persistent_workers=num_workers > 0,
        drop_last=False,
    )
