"""Dataset statistics for the split stage: class sizes, tiny classes, duplicate files, unreadable images.

Problems are logged as warnings and recorded (in the split manifest and stats.json), never fixed silently:
a duplicate across train and test inflates test accuracy, one across two classes is a labelling error,
and a class of three images cannot be learnt or measured; only the user can decide what to do about them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import atomic_path
from edgepipe.data.sources import Listing

log = logging.getLogger(__name__)

TINY_CLASS = 5  # fewer images than this: too few to learn a class or to measure it
SHOWN = 20  # list items kept in the manifest (stats.json keeps all)
PARTS = ("train", "val", "test")


def _summary(counts: Sequence[int]) -> dict[str, Any]:
    a = np.asarray(counts, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": int(a.min()),
        "max": int(a.max()),
        "median": float(np.median(a)),
        "imbalance": float(a.max() / a.min()) if a.min() > 0 else None,  # largest / smallest class
    }


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_duplicates(root: Path, refs: Sequence[str]) -> list[list[str]]:
    """Groups of files (paths relative to ``root``) with identical content.

    Only files that share their size with another are read and hashed, so a folder of distinct JPEGs
    costs one stat per file.
    """
    root = Path(root)
    by_size: dict[int, list[str]] = defaultdict(list)
    for ref in refs:
        by_size[(root / ref).stat().st_size].append(ref)
    groups: dict[str, list[str]] = defaultdict(list)
    for same in by_size.values():
        if len(same) > 1:
            for ref in same:
                groups[_file_digest(root / ref)].append(ref)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def dataset_stats(
    listing: Listing, split: Mapping[str, Sequence[tuple[str, int]]], root: Path | None = None
) -> dict[str, Any]:
    """Images per class (the whole dataset and each split part), problems found, summary across classes.

    ``root`` is the ImageFolder's folder; duplicate files are only looked for there (built-in datasets
    are curated).
    """
    classes = listing.classes
    n = len(classes)
    dataset = [0] * n
    for samples in listing.samples.values():
        for _, y in samples:
            dataset[y] += 1
    per_part = {part: [0] * n for part in PARTS}
    part_of: dict[str, str] = {}
    for part in PARTS:
        for ref, y in split.get(part, ()):
            per_part[part][y] += 1
            part_of[ref] = part
    stats: dict[str, Any] = {
        "classes": n,
        "images": sum(dataset),
        "images_per_class": dict(zip(classes, dataset, strict=True)),
        "summary": _summary(dataset),
        "split_per_class": {part: dict(zip(classes, c, strict=True)) for part, c in per_part.items()},
        "empty_classes": [c for c, k in zip(classes, dataset, strict=True) if k == 0],
        "tiny_classes": {c: k for c, k in zip(classes, dataset, strict=True) if 0 < k < TINY_CLASS},
        "unreadable_files": [s for s in listing.skipped if s["reason"].startswith("unreadable")],
        "skipped_files": len(listing.skipped),
        "duplicates": None,  # not checked (built-in dataset)
    }
    if root is not None:
        label = {ref: y for samples in listing.samples.values() for ref, y in samples}
        groups = find_duplicates(root, list(label))
        stats["duplicates"] = [
            {
                "files": g,
                "classes": sorted({classes[label[r]] for r in g}),
                "parts": sorted({part_of[r] for r in g if r in part_of}),
            }
            for g in groups
        ]
    return stats


def warn(stats: dict[str, Any]) -> None:
    """One warning per kind of problem, naming the first few instances."""

    def some(items: Sequence[str]) -> str:
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        return ", ".join(items[:5]) + more

    if stats["empty_classes"]:
        log.warning("class(es) with no image: %s", some(stats["empty_classes"]))
    if stats["tiny_classes"]:
        tiny = [f"{c} ({k})" for c, k in stats["tiny_classes"].items()]
        log.warning("class(es) with fewer than %d images: %s", TINY_CLASS, some(tiny))
    if stats["unreadable_files"]:
        log.warning(
            "%d unreadable image(s) skipped: %s",
            len(stats["unreadable_files"]),
            some([s["file"] for s in stats["unreadable_files"]]),
        )
    dups = stats["duplicates"] or []
    if dups:
        cross_class = [d for d in dups if len(d["classes"]) > 1]
        cross_split = [d for d in dups if len(d["parts"]) > 1]
        log.warning(
            "%d group(s) of identical files (%d across classes: conflicting labels; %d across split "
            "parts: test leakage): %s",
            len(dups),
            len(cross_class),
            len(cross_split),
            some([" = ".join(d["files"]) for d in dups]),
        )


def manifest_entry(stats: dict[str, Any]) -> dict[str, Any]:
    """The manifest-sized view: the same keys with long lists cut to their first SHOWN items + counts."""
    dups = stats["duplicates"]
    entry = {k: v for k, v in stats.items() if k not in ("duplicates", "unreadable_files", "split_per_class")}
    entry["unreadable_files"] = stats["unreadable_files"][:SHOWN]
    entry["unreadable_count"] = len(stats["unreadable_files"])
    if dups is None:
        entry["duplicates"] = None
    else:
        entry["duplicates"] = {
            "groups": len(dups),
            "across_classes": sum(len(d["classes"]) > 1 for d in dups),
            "across_split_parts": sum(len(d["parts"]) > 1 for d in dups),
            "first": dups[:SHOWN],
        }
    return entry


def plot_class_distribution(stats: dict[str, Any], path: Path, title: str) -> Path:
    """Stacked bars per class: train / val / test, and images the split left out (limit_per_class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(stats["images_per_class"])
    n = len(classes)
    total = np.array([stats["images_per_class"][c] for c in classes], dtype=np.int64)
    parts = {p: np.array([stats["split_per_class"][p][c] for c in classes]) for p in PARTS}
    unused = total - sum(parts.values())
    width = float(np.clip(0.28 * n + 2.5, 6, 40))
    font = 9 if n <= 30 else 7 if n <= 80 else 5
    fig, ax = plt.subplots(figsize=(width, 4.5))
    bottom = np.zeros(n)
    x = np.arange(n)
    for name, values in (*parts.items(), ("not used", unused)):
        if name == "not used" and not unused.any():
            continue
        ax.bar(x, values, bottom=bottom, label=name, width=0.8)
        bottom += values
    ax.axhline(TINY_CLASS, color="red", lw=0.8, ls="--", label=f"{TINY_CLASS} images")
    ax.set_xticks(x, [c if len(c) <= 24 else c[:23] + "…" for c in classes], rotation=90, fontsize=font)
    s = stats["summary"]
    ax.set(ylabel="images", xlim=(-0.6, n - 0.4))
    ax.set_title(
        f"{title}: {stats['images']} images, {n} classes\nper class: mean {s['mean']:.0f}, "
        f"median {s['median']:.0f}, min {s['min']}, max {s['max']}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
