"""The QDQ export path: equal to the QAT model in torch, clean in ONNX, fused to integer kernels by ORT."""

import collections
import copy

import numpy as np
import onnx
import pytest
import torch

from edgepipe.models.build import build_model
from edgepipe.quant.export import export_onnx, read_metadata
from edgepipe.quant.qat import fake_quant_modules, freeze_bn_stats, freeze_observers, prepare_qat
from edgepipe.quant.qdq import to_qdq_module
from edgepipe.recipe import ModelConfig


@pytest.fixture(scope="module")
def qat_model():
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(width_mult=0.25), 4, quantizable=True)
    prepare_qat(model)
    for _ in range(3):  # training-mode steps move BN stats and observers away from their init
        model(torch.randn(8, 3, 32, 32))
    freeze_observers(model)
    freeze_bn_stats(model)
    return model.eval()


def test_prepare_qat_uses_plain_fake_quant_not_the_fused_op(qat_model):
    kinds = {type(m).__name__ for _, m in fake_quant_modules(qat_model)}
    assert "FusedMovingAvgObsFakeQuantize" not in kinds and "FakeQuantize" in kinds


def test_prepare_qat_quantizes_pool_means_and_the_hardswish_gate_as_the_runtimes_do(qat_model):
    import torch.nn as nn

    pools = [m for m in qat_model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert pools and all(type(m.activation_post_process).__name__ == "FakeQuantize" for m in pools)
    assert not any(type(m) is nn.Hardswish for m in qat_model.modules())
    gated = copy.deepcopy(next(m for m in qat_model.modules() if type(m).__name__ == "GatedHardswish"))
    gated.activation_post_process = nn.Identity()  # look at the gate alone: output / x
    x = torch.linspace(-4, 4, 800)  # never 0
    gate = gated(x) / x
    assert torch.allclose(gate * 255, torch.round(gate * 255), atol=1e-3)
    assert gate.min() == 0 and abs(float(gate.max()) - 1) < 1e-6


def test_qdq_module_equals_qat_model(qat_model):
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref, out = qat_model(x), to_qdq_module(qat_model)(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def int8_onnx(qat_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("qdq") / "int8.onnx"
    export_onnx(to_qdq_module(qat_model), path, [3, 32, 32], {"classes": ["a", "b", "c", "d"]}, 17, qdq=True)
    return path


def test_int8_graph_has_no_batchnorm_scalar_scales_and_int8_weights(int8_onnx):
    m = onnx.load(str(int8_onnx))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Div"] == 0 and ops["QuantizeLinear"] > 0
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            assert len(inits[n.input[1]].dims) == 0, f"{n.name}: activation scale is not a scalar"
        if n.op_type == "Conv":
            w_dq = next(p for p in m.graph.node if n.input[1] in p.output)
            assert w_dq.op_type == "DequantizeLinear"
            assert inits[w_dq.input[0]].data_type == onnx.TensorProto.INT8
            b_dq = next(p for p in m.graph.node if n.input[2] in p.output)
            assert inits[b_dq.input[0]].data_type == onnx.TensorProto.INT32


def test_onnxruntime_fuses_every_conv_into_qlinearconv(int8_onnx, tmp_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(int8_onnx), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    n_conv = sum(1 for n in onnx.load(str(int8_onnx)).graph.node if n.op_type == "Conv")
    assert ops["QLinearConv"] == n_conv and ops["Conv"] == 0
    assert ops["QGemm"] == 2 and ops["Gemm"] == 0, "both classifier layers must run as QGemm"
    assert ops["QLinearAdd"] > 0 and ops["QLinearGlobalAveragePool"] > 0
    # HardSwish/HardSigmoid run as QLinearAdd + QLinearMul: no float islands between the integer kernels
    assert ops["HardSwish"] == ops["HardSigmoid"] == ops["Mul"] == 0 and ops["QLinearMul"] > 0
    assert ops["QuantizeLinear"] <= 2 and ops["DequantizeLinear"] <= 3


def test_onnxruntime_int8_agrees_with_torch_fake_quant(qat_model, int8_onnx):
    import onnxruntime as ort

    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        ref = qat_model(x).numpy()
    out = ort.InferenceSession(str(int8_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_onnx_graph_computes_what_the_qat_model_computes(qat_model, int8_onnx):
    """With ORT's fusions off, Q/DQ run in float: the graph must then equal the torch model, so that any
    disagreement left is integer-kernel rounding, not a different function (pool means, HardSwish gates)."""
    from edgepipe.runtimes.onnxruntime import OrtRuntime

    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        ref = qat_model(x).numpy()
    out = OrtRuntime(int8_onnx, threads=1, optimization="disable").predict(x.numpy())
    assert (out.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(out, ref, atol=0.02 * np.abs(ref).max())


def test_integer_hard_activations_match_the_float_form(qat_model, int8_onnx, tmp_path):
    import onnxruntime as ort

    from edgepipe.quant.export import torchscript_export
    from edgepipe.quant.onnx_qdq import clean_qdq

    raw = tmp_path / "raw.onnx"
    torchscript_export(to_qdq_module(qat_model), torch.zeros(1, 3, 32, 32), raw, 17)
    float_act = tmp_path / "float_act.onnx"
    onnx.save(clean_qdq(onnx.load(str(raw)), integer_activations=False), str(float_act))
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32), dtype=np.float32)
    a, b = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for p in (float_act, int8_onnx)
    )
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_metadata_travels_with_the_model(int8_onnx):
    assert read_metadata(int8_onnx)["classes"] == ["a", "b", "c", "d"]


def test_preparing_a_model_that_is_not_a_quantizable_twin_is_a_model_error():
    from edgepipe.errors import ModelError

    with pytest.raises(ModelError, match="Linear is not a quantizable twin.*; fix: build it with"):
        prepare_qat(torch.nn.Linear(2, 2))
