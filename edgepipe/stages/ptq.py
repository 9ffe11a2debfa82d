"""ptq: ONNX Runtime static post-training quantization of the FP32 ONNX (QDQ, per-channel): the baseline
every report shows beside our QAT model, so users see what QAT buys."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from edgepipe.artifacts import StageResult
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.quant.export import read_metadata
from edgepipe.quant.ort_ptq import ort_static_quantize
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec

log = logging.getLogger(__name__)


def config(recipe: Recipe) -> dict[str, Any]:
    return {"seed": recipe.seed, "ptq": recipe.ptq.model_dump()}


def run(ctx: StageContext) -> StageResult:
    r, cfg = ctx.recipe, ctx.recipe.ptq
    fp32 = ctx.input("onnx_fp32")
    meta = read_metadata(fp32)
    data = SplitData(ctx.input("split"), r.data, Preprocessing.from_dict(meta["preprocessing"]), r.seed)
    n_train = len(data.split["train"])
    idx = sorted(random.Random(r.seed).sample(range(n_train), min(cfg.calibration_images, n_train)))
    from torch.utils.data import Subset

    ds = Subset(data.dataset("train"), idx)
    x = np.stack([ds[i][0].numpy() for i in range(len(ds))]).astype(np.float32)
    out = ctx.out_dir / "ptq_int8.onnx"
    ort_static_quantize(
        fp32,
        out,
        x,
        cfg.calibration,
        {
            **meta,
            "precision": "int8-ptq",
            "quantization": {
                "tool": "onnxruntime.quantize_static",
                "calibration": cfg.calibration,
                "images": len(idx),
            },
        },
    )
    (ctx.out_dir / "calibration_indices.json").write_text(str(idx))
    return StageResult(
        outputs={"onnx_ptq": out.name, "calibration_indices": "calibration_indices.json"},
        metrics={"calibration": cfg.calibration, "calibration_images": len(idx)},
    )


STAGE = StageSpec(
    name="ptq",
    needs=("split", "onnx_fp32"),
    outputs=("onnx_ptq", "calibration_indices"),
    config=config,
    run=run,
)
