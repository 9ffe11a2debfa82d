"""ptq: post-training quantization of the FP32 ONNX, the baseline every report shows beside our QAT model so
users see what QAT buys: ONNX Runtime's static quantization (QDQ, per-channel; ``ptq.method: ort``) or NNCF's
(``ptq.method: nncf``: a QDQ ONNX for ONNX Runtime and an IR for OpenVINO, each from NNCF's own backend)."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.quant.export import read_metadata
from edgepipe.quant.ort_ptq import ort_static_quantize
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec

log = logging.getLogger(__name__)


def config(recipe: Recipe) -> dict[str, Any]:
    nncf_ir = {"openvino": recipe.export.openvino} if recipe.ptq.method == "nncf" else {}
    ptq = recipe.ptq.model_dump(exclude={"calibration"} if recipe.ptq.method == "nncf" else set())
    numerics = {} if recipe.ptq.method == "nncf" else {"numerics": recipe.qat.numerics}  # the QAT model's
    return {"seed": recipe.seed, "ptq": ptq, **nncf_ir, **numerics}


def run(ctx: StageContext) -> StageResult:
    r, cfg = ctx.recipe, ctx.recipe.ptq
    fp32 = ctx.input("onnx_fp32")
    meta = read_metadata(fp32)
    data = SplitData(ctx.input("split"), r.data, Preprocessing.from_dict(meta["preprocessing"]), r.seed)
    idx, x = data.calibration(cfg.calibration_images)
    out = ctx.out_dir / "ptq_int8.onnx"
    outputs = {"onnx_ptq": out.name, "calibration_indices": "calibration_indices.json"}
    if cfg.method == "nncf":
        from edgepipe.quant.nncf_ptq import nncf_quantize_ir, nncf_quantize_onnx

        quant = {"tool": "nncf.quantize", "images": len(idx)}
        nncf_quantize_onnx(fp32, out, x, {**meta, "precision": "int8-ptq", "quantization": quant})
        if r.export.openvino:
            xml = nncf_quantize_ir(fp32, ctx.out_dir / "ptq_int8.xml", x)
            outputs.update({"ir_ptq": xml.name, "ir_ptq_bin": xml.with_suffix(".bin").name})
    else:
        quant = {"tool": "onnxruntime.quantize_static", "calibration": cfg.calibration, "images": len(idx),
                 "numerics": r.qat.numerics}  # fmt: skip
        ort_static_quantize(
            fp32, out, x, cfg.calibration, {**meta, "precision": "int8-ptq", "quantization": quant},
            numerics=r.qat.numerics,
        )
    (ctx.out_dir / "calibration_indices.json").write_text(str(idx))
    metrics = {"method": cfg.method, **quant, "calibration_images": len(idx)}
    return StageResult(outputs=outputs, metrics=metrics)


STAGE = StageSpec(
    name="ptq",
    needs=("split", "onnx_fp32"),
    outputs=("onnx_ptq", "calibration_indices", "ir_ptq", "ir_ptq_bin"),
    config=config,
    run=run,
)
