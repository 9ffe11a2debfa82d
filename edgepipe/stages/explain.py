"""explain: a Grad-CAM grid of test images, the FP32 and the QAT model side by side (same images, same layer).

Per class, the test images the FP32 model gets right and wrong with the highest confidence (chosen from a
seeded sample of ``explain.images`` test images); both models explain their own top class on each, so a user
sees whether quantization moved the evidence. examples.json lists every image, its label and both models'
predictions and probabilities. The maps come from edgepipe explain's functions (edgepipe/explain).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgepipe.artifacts import StageResult, atomic_write_json
from edgepipe.data.loaders import SplitData
from edgepipe.errors import RecipeError
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec

log = logging.getLogger(__name__)

KINDS = ("correct", "wrong")
MODELS = (("fp32", "FP32", "checkpoint"), ("qat", "QAT", "qat_checkpoint"))
GRID = "gradcam_grid.png"
EXAMPLES = "examples.json"


def config(recipe: Recipe) -> dict[str, Any]:
    return {"explain": recipe.explain.model_dump(), "seed": recipe.seed}


def check(recipe: Recipe) -> None:
    """Refused before any stage runs when the grad-cam package is missing (it is an optional extra)."""
    import importlib.util

    if importlib.util.find_spec("pytorch_grad_cam") is None:
        raise RecipeError(
            "stage explain needs the optional package grad-cam, which is not installed; fix: pip install "
            "'edgepipe[explain]', or list the stages without explain (stages: [finetune, qat, export, ptq, "
            "bench])"
        )


def pick(probs: np.ndarray, labels: np.ndarray, per_class: int) -> dict[tuple[int, str], list[int]]:
    """(class, correct|wrong) -> up to ``per_class`` indices, most confident first (the top probability)."""
    pred, conf = probs.argmax(1), probs.max(1)
    out: dict[tuple[int, str], list[int]] = {}
    for c in range(probs.shape[1]):
        for kind in KINDS:
            hit = (labels == c) & ((pred == c) if kind == "correct" else (pred != c))
            idx = np.flatnonzero(hit)
            out[(c, kind)] = idx[np.argsort(-conf[idx], kind="stable")][:per_class].tolist()
    return out


def _pool(n: int, images: int | None, seed: int) -> list[int]:
    if images is None or images >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=images, replace=False).tolist())


def _layer(model, x: np.ndarray, name: str | None) -> tuple[str, tuple[int, int] | None]:
    """explain.layer, checked against the model, else layer_for_input's choice; with its map size."""
    from edgepipe.errors import ModelError
    from edgepipe.explain.cam import layer_for_input, map_sizes, target_layer

    if name is None:
        return layer_for_input(model, x)
    try:
        target_layer(model.module, model.arch, name)
    except ModelError as exc:
        why = str(exc).replace("pass --target-layer", "set explain.layer to")
        raise RecipeError(f"explain.layer: {why}") from None
    return name, map_sizes(model.module, [name], x).get(name)


def run(ctx: StageContext) -> StageResult:
    from edgepipe.explain.cam import display_image, explain_batch, load_explainable, overlay
    from edgepipe.explain.figures import Cell, grid_png
    from edgepipe.runtimes.predict import torch_logits

    r, cfg = ctx.recipe, ctx.recipe.explain
    models = {key: load_explainable(ctx.input(name)) for key, _, name in MODELS}
    fp32 = models["fp32"]
    pre = Preprocessing.from_dict(fp32.preprocessing)
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    test = data.split["test"]
    pool = _pool(len(test), cfg.images, r.seed)
    x, y = data.arrays("test", indices=pool)
    logits = torch_logits(fp32.module, x)
    z = np.exp(logits - logits.max(1, keepdims=True))
    picks = pick(z / z.sum(1, keepdims=True), y, cfg.per_class)
    chosen = sorted({i for idx in picks.values() for i in idx})
    layer, size = _layer(fp32, x, cfg.layer)
    xs = x[chosen]
    shown = {key: explain_batch(m, xs, cfg.method, layer) for key, m in models.items()}
    at = {i: j for j, i in enumerate(chosen)}

    classes = data.classes
    cells: list[list[Cell | None]] = []
    row_labels: list[str] = []
    examples: list[dict[str, Any]] = []
    for c, name in enumerate(classes):
        for rank in range(cfg.per_class):
            row: list[Cell | None] = []
            for kind in KINDS:
                idx = picks[(c, kind)]
                if rank >= len(idx):
                    row += [None] * len(MODELS)
                    continue
                j = at[idx[rank]]
                image = display_image(xs[j], fp32.preprocessing)
                entry: dict[str, Any] = {"class": name, "kind": kind, "rank": rank + 1,
                                         "sample": list(test[pool[idx[rank]]]), "label": int(y[idx[rank]]),
                                         "grid": {"row": len(cells), "col": len(row)}}  # fmt: skip
                for key, short, _ in MODELS:
                    ex = shown[key]
                    p = int(ex.pred[j])
                    caption = f"{short}: {classes[p]} {100 * ex.prob[j]:.0f}%"
                    row.append(Cell(overlay(image, ex.cams[j]), caption))
                    entry[key] = {"pred": classes[p], "prob": round(float(ex.prob[j]), 6), "correct": p == c}
                examples.append(entry)
            cells.append(row)
            row_labels.append(name if cfg.per_class == 1 else f"{name} #{rank + 1}")
    used = shown["fp32"].layer
    cols = [f"{kind}, {short}" for kind in KINDS for _, short, _ in MODELS]
    title = (
        f"{cfg.method} at {used}: per true class (row), the test images FP32 gets right and wrong most "
        "confidently;\nFP32 and QAT (fake-quant) side by side, each explaining its own top class"
    )
    grid_png(cells, ctx.out_dir / GRID, title=title, col_labels=cols, row_labels=row_labels)
    agree = sum(e["fp32"]["pred"] == e["qat"]["pred"] for e in examples)
    doc = {
        "method": cfg.method,
        "layer": used,
        "map_size": list(size) if size else None,
        "selected_by": "FP32 top-1 probability, per true class",
        "pool": {"images": len(pool), "test_images": len(test), "seed": r.seed},
        "models": {key: str(m.path) for key, m in models.items()},
        "classes": classes,
        "images": examples,
        "qat_agrees_with_fp32": agree,
    }
    atomic_write_json(ctx.out_dir / EXAMPLES, doc)
    log.info("explain: %d image(s), %s at %s; QAT predicts as FP32 on %d", len(examples), cfg.method, used,
             agree)  # fmt: skip
    metrics = {"images": len(examples), "method": cfg.method, "layer": used, "qat_agrees_with_fp32": agree}
    return StageResult(outputs={"cam_grid": GRID, "cam_examples": EXAMPLES}, metrics=metrics)


STAGE = StageSpec(
    name="explain",
    needs=("split", "checkpoint", "qat_checkpoint"),
    outputs=("cam_grid", "cam_examples"),
    config=config,
    run=run,
    check=check,
)
