"""PNG figures of heat-map overlays: one per image, and grids (matplotlib, Agg, written atomically)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_path


@dataclass
class Cell:
    image: np.ndarray  # uint8 HWC overlay
    title: str


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def overlay_png(cell: Cell, path: Path, subtitle: str = "") -> Path:
    """One overlay, the predicted class and its probability in the title."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.6))
    ax.imshow(cell.image, interpolation="bilinear")
    ax.set_title(cell.title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.axis("off")
    return _save(fig, path)


def grid_png(
    cells: list[list[Cell | None]],
    path: Path,
    title: str = "",
    col_labels: list[str] | None = None,
    row_labels: list[str] | None = None,
) -> Path:
    """Rows x columns of overlays; an empty cell (None) says so instead of leaving a hole."""
    plt = _plt()
    rows, cols = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows + 0.4), squeeze=False)
    for i, row in enumerate(cells):
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = row[j] if j < len(row) else None
            if cell is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="grey", transform=ax.transAxes)
                for s in ax.spines.values():
                    s.set_visible(False)
            else:
                ax.imshow(cell.image, interpolation="bilinear")
                ax.set_title(cell.title, fontsize=8)
            if i == 0 and col_labels and j < len(col_labels):
                ax.set_title(f"{col_labels[j]}\n{ax.get_title()}", fontsize=8)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=8)
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=10)
        height = fig.get_size_inches()[1]
        top = 1.0 - (0.2 * (title.count("\n") + 1) + 0.1) / height  # room for the title above the cells
    fig.tight_layout(rect=(0, 0, 1, top))
    return _save(fig, path)
