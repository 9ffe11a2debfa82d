"""ResNet-50 through finetune -> qat -> export on tiny data: the QDQ path is not MobileNet-only.

ResNet brings what MobileNetV3 lacks: FloatFunctional.add_relu on the skip paths (Add + Relu before the
QuantizeLinear), a max pool after the stem, and a Sequential(Dropout, Linear) head.
"""

import collections
import json

import numpy as np
import onnx
import pytest
import yaml

from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe
from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resnet")
    data = make_imagefolder(tmp / "photos", classes=3, per_class=15, size=32)
    recipe = tiny_recipe(
        data,
        name="rn50",
        stages=["finetune", "qat", "export"],
        data={"batch_size": 8},
        model={"arch": "resnet50", "width_mult": 1.0, "dropout": 0.2},
        finetune={"epochs": 1, "max_batches_per_epoch": 2},
        qat={"max_batches_per_epoch": 2, "calibration_batches": 1},
        export={"openvino": False},
    )
    path = tmp / "rn50.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = load_recipe(path)
    build(r, tmp / "artifacts")
    return {"dir": tmp / "artifacts" / "rn50" / "export", "recipe": r}


def test_resnet50_int8_onnx_has_no_batchnorm_and_loads_in_onnxruntime(run):
    import onnxruntime as ort

    path = run["dir"] / "int8.onnx"
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 53 and ops["Add"] == 16
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, 3, 32, 32), np.float32)})
    assert out.shape == (2, 3)


def test_resnet50_int8_agrees_with_torch_and_runs_integer_convs_and_adds(run):
    metrics = json.loads((run["dir"] / "manifest.json").read_text())["metrics"]
    assert metrics["int8"]["ort_agreement"] >= run["recipe"].export.min_agreement
    from edgepipe.runtimes.onnxruntime import ort_op_account  # what the bench stage profiles

    account = ort_op_account(run["dir"] / "int8.onnx", 1, np.zeros((1, 3, 32, 32), np.float32), runs=3)
    counts = account["optimized_op_counts"]
    # every conv and every skip add_relu fused into integer kernels (the Relu folds into the Add's Q)
    assert counts.get("QLinearConv") == 53 and counts.get("QLinearAdd") == 16
    assert not {"Conv", "Add", "Relu", "MaxPool"} & set(counts)
    assert account["float_ops"] == [] and account["int8_time_share"] > 0.9
