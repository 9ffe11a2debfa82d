"""split: list the dataset, drop unreadable files, and write a deterministic stratified split."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_write_json, hash_json
from edgepipe.data.sources import open_source
from edgepipe.data.split import class_counts, make_split
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext

log = logging.getLogger(__name__)

name = "split"
needs: tuple[str, ...] = ()


def config(recipe: Recipe) -> dict[str, Any]:
    d = recipe.data
    src = open_source(d.dataset, d.root)
    return {
        "seed": recipe.seed,
        "dataset": d.dataset,
        "root": str(d.root) if d.root else None,
        "val_fraction": d.val_fraction,
        "test_fraction": d.test_fraction,
        "limit_per_class": d.limit_per_class,
        "source_fingerprint": hash_json(src.fingerprint()),
    }


def run(ctx: StageContext) -> StageResult:
    d = ctx.recipe.data
    source = open_source(d.dataset, d.root)
    listing = source.listing()
    split = make_split(listing, ctx.recipe.seed, d.val_fraction, d.test_fraction, d.limit_per_class)
    n = len(listing.classes)
    counts = {part: class_counts(samples, n) for part, samples in split.items()}
    for part, c in counts.items():
        tiny = [listing.classes[i] for i, k in enumerate(c) if k == 0]
        if tiny:
            log.warning("%s split has no image of class(es) %s", part, ", ".join(tiny))
    doc = {
        "source": {"dataset": d.dataset, "root": str(d.root) if d.root else None},
        "classes": listing.classes,
        **{part: [list(s) for s in samples] for part, samples in split.items()},
    }
    atomic_write_json(ctx.out_dir / "split.json", doc)
    metrics = {
        "classes": n,
        "sizes": {part: len(samples) for part, samples in split.items()},
        "per_class": counts,
        "skipped_files": listing.skipped,
    }
    return StageResult(outputs={"split": "split.json"}, metrics=metrics)
