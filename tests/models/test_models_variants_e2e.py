"""model.attention / model.fusion / model.head variants through finetune -> qat -> export on tiny data.

Each run checks what the INT8 graph must hold for the variant (ECA's conv, CBAM's gates, the fusion's
concatenation, the cosine head's MatMul) and that ONNX Runtime agrees with the torch QAT model
(export raises below export.min_agreement)."""

import collections
import json

import onnx
import pytest
import yaml

from edgepipe.bench.macs import count_macs
from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe
from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = pytest.mark.slow


def _run(tmp_path, name: str, model: dict, **over) -> dict:
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=12, size=32)
    parts = {"finetune": {"epochs": 2}, "qat": {"max_batches_per_epoch": 2}, "export": {"openvino": False}}
    for key, value in over.items():
        parts[key] = {**parts.get(key, {}), **value}
    recipe = tiny_recipe(data, name=name, stages=["finetune", "qat", "export"], model=model, **parts)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    build(load_recipe(path), tmp_path / "out")
    export = tmp_path / "out" / name / "export"
    ops = {
        key: collections.Counter(n.op_type for n in onnx.load(str(export / f"{key}.onnx")).graph.node)
        for key in ("fp32", "int8")
    }
    return {"dir": export, "ops": ops, "agreement": json.loads((export / "agreement.json").read_text())}


def test_mnv3_eca_multiscale_arcmargin_exports_int8_that_agrees(tmp_path):
    run = _run(
        tmp_path,
        "eca_ms_arc",
        {
            "attention": "eca",
            "fusion": "multiscale",
            "head": "arcmargin",
            "arc_scale": 16.0,
            "arc_margin": 0.2,
        },
    )
    fp32, int8 = run["ops"]["fp32"], run["ops"]["int8"]
    # MobileNetV3-large has 8 squeeze-excite blocks, all ECA now: one Sigmoid gate each, no HardSigmoid
    assert fp32["Sigmoid"] == 8 and fp32["HardSigmoid"] == 0
    assert fp32["GlobalAveragePool"] == 8 + 3 and fp32["Concat"] == 1  # 8 ECA descriptors, 3 fused scales
    assert fp32["MatMul"] == 1 and int8["MatMul"] == 1  # the cosine head; no Gemm bias for it
    assert int8["QuantizeLinear"] > 0 and int8["BatchNormalization"] == 0
    assert (
        run["agreement"]["int8"]["ort_agreement"] >= 0.8 and run["agreement"]["fp32"]["ort_agreement"] == 1.0
    )
    macs = count_macs(run["dir"] / "fp32.onnx")
    assert macs["macs"] == count_macs(run["dir"] / "int8.onnx")["macs"]


def test_mnv3_cbam_linear_exports_int8_that_agrees(tmp_path):
    run = _run(tmp_path, "cbam", {"attention": "cbam", "cbam_reduction": 4, "cbam_kernel": 3})
    int8 = run["ops"]["int8"]
    assert int8["MaxPool"] == 8 and int8["ReduceMax"] == 8 and int8["Sigmoid"] == 16
    assert run["agreement"]["int8"]["ort_agreement"] >= 0.8


def test_resnet50_cbam_arcmargin_focal_exports_int8_that_agrees(tmp_path):
    run = _run(
        tmp_path,
        "rn50_cbam",
        {"arch": "resnet50", "width_mult": 1.0, "attention": "cbam", "head": "arcmargin", "arc_scale": 16.0},
        data={"batch_size": 8},
        finetune={"epochs": 1, "max_batches_per_epoch": 3, "loss": "focal"},
        qat={"max_batches_per_epoch": 2, "calibration_batches": 1, "loss": "focal"},
    )
    int8 = run["ops"]["int8"]
    # 16 bottlenecks: CBAM's two shared-MLP convs twice and its spatial conv in each, beside ResNet's 53
    assert int8["Conv"] == 53 + 16 * 5 and int8["Sigmoid"] == 32 and int8["MatMul"] == 1
    assert run["agreement"]["int8"]["ort_agreement"] >= 0.8
