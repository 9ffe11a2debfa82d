"""Deterministic stratified splits, written to the run folder as file lists / indices."""

from __future__ import annotations

import random
from collections import defaultdict

from edgepipe.data.sources import Listing

SplitName = str  # "train" | "val" | "test"


def _by_class(samples: list[tuple[str, int]]) -> dict[int, list[tuple[str, int]]]:
    groups: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for s in samples:
        groups[s[1]].append(s)
    return groups


def _take(samples: list[tuple[str, int]], fractions: list[float], rng: random.Random) -> list[list]:
    """Split one class's samples by fractions (the last part takes the rest); order-independent."""
    items = sorted(samples)
    rng.shuffle(items)
    parts, start = [], 0
    for frac in fractions:
        n = max(1, round(frac * len(items))) if len(items) > len(fractions) else 0
        parts.append(items[start : start + n])
        start += n
    parts.append(items[start:])
    return parts


def _limit(
    samples: list[tuple[str, int]], per_class: int | None, rng: random.Random
) -> list[tuple[str, int]]:
    if per_class is None:
        return samples
    out = []
    for _, group in sorted(_by_class(samples).items()):
        group = sorted(group)
        rng.shuffle(group)
        out += group[:per_class]
    return out


def make_split(
    listing: Listing,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    limit_per_class: int | None = None,
) -> dict[SplitName, list[tuple[str, int]]]:
    """Stratified train/val/test. A source's own test split is kept; else 1 - val - test : val : test."""
    rng = random.Random(seed)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    has_test = "test" in listing.samples
    pool = listing.samples["train" if has_test else "all"]
    fractions = [val_fraction] if has_test else [val_fraction, test_fraction]
    for _, group in sorted(_by_class(pool).items()):
        parts = _take(group, fractions, rng)
        split["val"] += parts[0]
        if has_test:
            split["train"] += parts[1]
        else:
            split["test"] += parts[1]
            split["train"] += parts[2]
    if has_test:
        split["test"] = list(listing.samples["test"])
    # A limit subsamples each part per class (scaled for val/test), keeping the split's proportions.
    if limit_per_class is not None:
        small = max(1, round(limit_per_class * max(val_fraction, test_fraction) / (1 - val_fraction)))
        split = {
            "train": _limit(split["train"], limit_per_class, rng),
            "val": _limit(split["val"], small, rng),
            "test": _limit(split["test"], small * (2 if has_test else 1), rng),
        }
    return {k: sorted(v, key=lambda s: (s[1], s[0])) for k, v in split.items()}


def class_counts(samples: list[tuple[str, int]], n_classes: int) -> list[int]:
    counts = [0] * n_classes
    for _, y in samples:
        counts[y] += 1
    return counts
