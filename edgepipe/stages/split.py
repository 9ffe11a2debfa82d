"""split: list the dataset, drop unreadable files, write a deterministic stratified split + statistics."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_write_json, hash_json
from edgepipe.data.sources import ImageFolder, open_source
from edgepipe.data.split import class_counts, make_split
from edgepipe.data.stats import dataset_stats, manifest_entry, plot_class_distribution, warn
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec

log = logging.getLogger(__name__)

STATS_VERSION = 1  # bump when the statistics change, so cached split stages recompute them


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
        "stats_version": STATS_VERSION,
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
    stats = dataset_stats(listing, split, source.root if isinstance(source, ImageFolder) else None)
    warn(stats)
    atomic_write_json(ctx.out_dir / "stats.json", stats)
    plot_class_distribution(stats, ctx.out_dir / "class_distribution.png", title=d.dataset or d.root.name)
    metrics = {
        "classes": n,
        "sizes": {part: len(samples) for part, samples in split.items()},
        "per_class": counts,
        "skipped_files": listing.skipped,
        "stats": manifest_entry(stats),
    }
    return StageResult(outputs={"split": "split.json"}, metrics=metrics)


STAGE = StageSpec(name="split", needs=(), outputs=("split",), config=config, run=run, always=True)
