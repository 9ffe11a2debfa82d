"""ptq: ONNX Runtime static post-training quantization of the FP32 ONNX (QDQ, per-channel): the baseline
every report shows beside our QAT model, so users see what QAT buys."""

from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.loaders import SplitData
from edgepipe.quant.export import read_metadata, set_metadata
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext

log = logging.getLogger(__name__)

name = "ptq"
needs = ("split", "onnx_fp32")


def config(recipe: Recipe) -> dict[str, Any]:
    return {"seed": recipe.seed, "ptq": recipe.ptq.model_dump()}


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed train images."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16):
        self.batches = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def ort_static_quantize(fp32, out, x: np.ndarray, calibration: str, meta: dict) -> None:
    """ONNX Runtime's static quantization as its docs advise: pre-process, then QDQ per-channel, U8 x S8."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration]
    with tempfile.TemporaryDirectory() as work, atomic_path(out) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # folds BN, infers shapes
        quantize_static(
            str(pre),
            str(tmp),
            _Reader(x, "input"),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
        proto = onnx.load(str(tmp))
        set_metadata(proto, meta)
        onnx.save(proto, str(tmp))


def run(ctx: StageContext) -> StageResult:
    r, cfg = ctx.recipe, ctx.recipe.ptq
    fp32 = ctx.input("onnx_fp32")
    meta = read_metadata(fp32)
    data = SplitData(ctx.input("split"), r.data, meta["preprocessing"], r.seed)
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
