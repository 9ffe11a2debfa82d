"""`edgepipe explain`: one overlay PNG per image and a grid, for float and QAT checkpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.errors import DataError
from edgepipe.explain.cam import Explainable, display_image, explain_batch, load_explainable, overlay
from edgepipe.explain.figures import Cell, grid_png, overlay_png

log = logging.getLogger(__name__)


@dataclass
class ExplainResult:
    model: Explainable
    layer: str
    method: str
    overlays: list[Path] = field(default_factory=list)
    grid: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, why)


def _names(shown: list[str]) -> list[str]:
    """A file name per input: its stem, made unique with its position when stems repeat."""
    stems = [Path(s).stem for s in shown]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [f"{i:03d}_{s}" if s in repeated else s for i, s in enumerate(stems)]


def explain_images(
    model_path: Path,
    inputs: list[str | Path],
    out_dir: Path,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 8,
) -> ExplainResult:
    from edgepipe.predict.decode import image_decoder
    from edgepipe.predict.inputs import expand_inputs

    model = load_explainable(model_path)
    items = expand_inputs(inputs)
    decode = image_decoder(model.preprocessing)
    decoded = [decode(it) for it in items]
    ok = [d for d in decoded if d.array is not None]
    skipped = [(d.item.shown, str(d.error)) for d in decoded if d.array is None]
    for shown, why in skipped:
        log.warning("%s: %s; not explained", shown, why)
    if not ok:
        raise DataError(f"none of the {len(items)} inputs could be read as an image; fix: give image files")
    out_dir = Path(out_dir)
    names = _names([d.item.shown for d in ok])
    cells: list[Cell] = []
    result = ExplainResult(model, "", method, skipped=skipped)
    for start in range(0, len(ok), batch_size):
        chunk = ok[start : start + batch_size]
        x = np.stack([d.array for d in chunk])  # type: ignore[misc]
        ex = explain_batch(model, x, method, layer)
        result.layer = ex.layer
        for j in range(len(chunk)):
            label = model.classes[int(ex.pred[j])]
            cell = Cell(overlay(display_image(x[j], model.preprocessing), ex.cams[j]),
                        f"{label} {100 * ex.prob[j]:.1f}%")  # fmt: skip
            cells.append(cell)
            sub = f"{method} at {ex.layer}, {model.kind} model"
            path = overlay_png(cell, out_dir / f"{names[start + j]}.{method}.png", subtitle=sub)
            result.overlays.append(path)
    cols = min(4, len(cells))
    rows = [cells[i : i + cols] for i in range(0, len(cells), cols)]
    title = f"{method} at {result.layer} of {model.path.name} ({model.kind}); predicted class and probability"
    result.grid = grid_png(rows, out_dir / f"grid.{method}.png", title=title)  # type: ignore[arg-type]
    log.info("%d overlay(s) and a grid in %s", len(result.overlays), out_dir)
    return result
