"""QAT trains the int32 bias rounding of the INT8 export: the torch model and the exported graph agree."""

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from edgepipe.quant.export import export_onnx
from edgepipe.quant.int32_bias import Int32Bias, bind_int32_biases, fake_quantize_bias
from edgepipe.quant.qat import (
    fake_quant_modules,
    float_functional,
    freeze_bn_stats,
    freeze_observers,
    prepare_qat,
    quant_stubs,
)
from edgepipe.quant.qdq import to_qdq_module


class _TinyNet(nn.Module):
    """Conv+BN+ReLU, a depthwise Conv+BN in a residual add, a quantized pool mean and a linear head."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = quant_stubs()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16)
        self.add = float_functional()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x):
        x = self.r1(self.b1(self.c1(self.quant(x))))
        x = self.add.add(x, self.b2(self.c2(x)))
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))

    def fuse_model(self, is_qat=None):
        from torch.ao.quantization import fuse_modules_qat

        fuse_modules_qat(self, [["c1", "b1", "r1"], ["c2", "b2"]], inplace=True)


def _trained_tiny() -> nn.Module:
    torch.manual_seed(1)
    model = prepare_qat(_TinyNet())
    for _ in range(5):  # training-mode steps: BN statistics and observer ranges away from their init
        model(torch.randn(16, 3, 16, 16))
    freeze_observers(model)
    freeze_bn_stats(model)
    return model.eval()


def _unbind(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, Int32Bias):
            m.bind(None)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = _trained_tiny()
    path = tmp_path_factory.mktemp("int32") / "int8.onnx"
    export_onnx(to_qdq_module(model), path, [3, 16, 16], {}, 17, qdq=True)
    x = torch.randn(400, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, path, x


def _ort_no_fusions(path, x):
    from edgepipe.runtimes.onnxruntime import OrtRuntime

    return OrtRuntime(path, threads=1, optimization="disable").predict(x.numpy())


def _share_within(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> float:
    """Share of inputs whose logits all agree within ``tol`` (a float tie at a rounding can flip one)."""
    return float((np.abs(a - b).max(1) <= tol).mean())


def test_fake_quantize_bias_is_the_exports_int32_rounding():
    rng = np.random.default_rng(0)
    b = rng.standard_normal(64).astype(np.float32)
    s_in, s_w = np.float32(0.0173), rng.uniform(1e-4, 1e-2, 64).astype(np.float32)
    out = fake_quantize_bias(torch.from_numpy(b), torch.tensor([s_in]), torch.from_numpy(s_w)).numpy()
    scale = (s_in * s_w).astype(np.float32)  # onnx_qdq._quantize_bias, then DequantizeLinear
    q = np.clip(np.round(b / scale), -(2**31), 2**31 - 1).astype(np.int32)
    np.testing.assert_array_equal(out, q.astype(np.float32) * scale)


def test_fake_quantize_bias_passes_the_gradient_straight_through():
    b = torch.randn(8, requires_grad=True)
    fake_quantize_bias(b, torch.tensor([0.1]), torch.full((8,), 0.05)).mul(torch.arange(8.0)).sum().backward()
    torch.testing.assert_close(b.grad, torch.arange(8.0))


def test_qat_model_equals_the_int8_graph_run_in_float(tiny):
    """ORT with its fusions off runs the exported Q/DQ graph in float: the torch QAT model must compute the
    same logits, int32 bias rounding included."""
    model, path, x = tiny
    with torch.no_grad():
        ref = model(x).numpy()
    out = _ort_no_fusions(path, x)
    assert _share_within(ref, out) >= 0.99
    assert (ref.argmax(1) == out.argmax(1)).all()


def test_without_the_bias_fake_quant_the_qat_model_is_another_function(tiny):
    """The check above has teeth: a QAT model with float biases (eager torch's default) misses it."""
    model, path, x = tiny
    float_bias = _unbind(copy.deepcopy(model))
    with torch.no_grad():
        ref = float_bias(x).numpy()
    assert _share_within(ref, _ort_no_fusions(path, x)) < 0.99


def test_each_layer_reads_the_fake_quant_of_its_input():
    model = _trained_tiny()
    bound = bind_int32_biases(model, torch.zeros(1, 3, 16, 16))
    assert bound == {
        "c1": "quant.activation_post_process",
        "c2": "c1.activation_post_process",
        "fc": "pool.activation_post_process",  # through flatten: the export carries the pool's Q/DQ across it
    }


def test_binding_changes_no_state_and_no_state_dict_key():
    model = _trained_tiny()
    before = copy.deepcopy(model.state_dict())
    model.train()
    model.c1.freeze_bn_stats()
    flags = [m.training for m in model.modules()]
    observers = [bool(fq.observer_enabled[0]) for _, fq in fake_quant_modules(model)]
    bind_int32_biases(model, torch.randn(2, 3, 16, 16))
    assert [m.training for m in model.modules()] == flags
    assert [bool(fq.observer_enabled[0]) for _, fq in fake_quant_modules(model)] == observers
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any("int32_bias" in k for k in after)  # checkpoints from before still load, and vice versa


def test_a_copy_reads_its_own_fake_quants(tiny):
    model = copy.deepcopy(tiny[0])
    twin = copy.deepcopy(model)
    assert twin.c2.int32_bias.source is twin.c1.activation_post_process
    assert twin.c2.int32_bias.source is not model.c1.activation_post_process


def test_the_model_binds_itself_on_its_first_forward():
    torch.manual_seed(0)
    model = prepare_qat(_TinyNet())
    assert model.fc.int32_bias.source is None
    model(torch.randn(4, 3, 16, 16))
    assert model.fc.int32_bias.source is model.pool.activation_post_process


def test_training_with_live_batchnorm_still_rounds_the_folded_bias():
    """Before BN is frozen the module trains torch's batch-statistics form; the rounding error of the bias the
    export will fold is added to it, and gradients reach every parameter."""
    torch.manual_seed(0)
    model = prepare_qat(_TinyNet())
    model(torch.randn(8, 3, 16, 16))
    x = torch.randn(8, 3, 16, 16)
    y = model(x)
    y.sum().backward()
    assert model.c1.bn.weight.grad is not None and model.fc.bias.grad is not None
    with torch.no_grad():
        y_float = _unbind(copy.deepcopy(model))(x)
    assert not torch.equal(y, y_float)


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "efficientnet_lite0"])
def test_every_int32_bias_in_the_export_is_trained(arch, tmp_path):
    """The layers QAT rounds are exactly those the export gives an int32 bias (pads, pools, flatten, adds)."""
    from edgepipe.models.build import build_model
    from edgepipe.recipe import ModelConfig

    torch.manual_seed(0)
    extra = {"width_mult": 0.25} if arch.startswith("mobilenet") else {}
    model, _ = build_model(ModelConfig(arch=arch, **extra), 3, quantizable=True)
    prepare_qat(model, example=torch.zeros(1, 3, 32, 32))
    bound = sum(m.source is not None for m in model.modules() if isinstance(m, Int32Bias))
    model(torch.randn(2, 3, 32, 32))
    freeze_observers(model)
    freeze_bn_stats(model)
    path = tmp_path / "int8.onnx"
    export_onnx(to_qdq_module(model.eval()), path, [3, 32, 32], {}, 17, qdq=True)
    graph = onnx.load(str(path)).graph
    int32 = sum(
        1 for i in graph.initializer if i.data_type == onnx.TensorProto.INT32 and i.name.endswith("_int32")
    )
    layers = sum(1 for n in graph.node if n.op_type in ("Conv", "Gemm"))
    assert bound == int32 == layers
