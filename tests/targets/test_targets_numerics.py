"""INT8 numerics on each target's own kernels (natively and under qemu-user), on tiny models.

A developer on an AVX-512 VNNI machine sees here what an AVX2 CPU computes: a model built so that 8-bit
weights saturate AVX2's vpmaddubsw flips its prediction on x86-64-v3 and nowhere else; its U8U8 form, and a
7-bit QAT MobileNetV3, agree on every target."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgepipe.targets import check_targets, placement

EMULATED = ("x86-64-v3", "cortex-a76")


def _placements():
    """host + the emulated targets; without the emulators the test skips locally but fails in CI (make test
    installs them: a CI run that skipped here would prove nothing)."""
    ps = [placement("host"), *(placement(n) for n in EMULATED)]
    missing = [f"{p.target.name}: {p.reason}" for p in ps if not p.checked]
    if missing:
        if os.environ.get("CI"):
            pytest.fail("emulated targets unavailable in CI: " + "; ".join(missing))
        pytest.skip("emulated targets unavailable: " + "; ".join(missing))
    return ps


def _saturating_model(path: Path, w_hi: int) -> Path:
    """Q(x) -> DQ -> Conv 1x1 (256 -> 2, int8 weights) -> Q -> DQ: what ONNX Runtime fuses into QLinearConv.

    With x = 1.0 (u8 255): channel 0 has weight w_hi on the first 128 inputs, channel 1 has 63 on all 256.
    Exact: 255*127*128 = 4145280 > 255*63*256 = 4112640, class 0. AVX2 sums u8 x s8 pairs in int16: a pair of
    127s saturates at 32767, so channel 0 falls to 64*32767 = 2097088: class 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((2, 256, 1, 1), np.int8)
    w[0, :128] = w_hi
    w[1, :] = 63
    s_in, s_w, s_out = 1 / 255, 1 / 127, 1.0
    inits = [
        numpy_helper.from_array(np.array(s_in, np.float32), "s_in"),
        numpy_helper.from_array(np.array(0, np.uint8), "z_in"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(s_w, np.float32), "s_w"),
        numpy_helper.from_array(np.array(0, np.int8), "z_w"),
        numpy_helper.from_array(np.array(s_out, np.float32), "s_out"),
        numpy_helper.from_array(np.array(0, np.uint8), "z_out"),
        numpy_helper.from_array(np.array([-1, 2], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s_in", "z_in"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "s_w", "z_w"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "s_out", "z_out"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s_out", "z_out"], ["yd"]),
        helper.make_node("Reshape", ["yd", "flat"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "sat", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 256, 1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(model: Path, x: np.ndarray, reference: np.ndarray):
    return {r.target: r for r in check_targets([(model, "onnxruntime", _placements())], x, reference, None)}


X = np.ones((4, 256, 1, 1), np.float32)
EXACT = np.tile(np.array([[1.0, 0.0]], np.float32), (4, 1))  # class 0 on every image


def test_8_bit_weights_saturate_on_x86_64_v3_and_only_there(tmp_path):
    results = _run(_saturating_model(tmp_path / "s8.onnx", 127), X, EXACT)
    assert results["x86-64-v3"].how == "emulated"
    assert results["x86-64-v3"].agreement == 0.0  # the check can fail: AVX2's saturation flips every image
    assert results["cortex-a76"].agreement == 1.0
    assert results["cortex-a76"].cpu.get("CPU part") == "0xd0b"  # ran as a Cortex-A76, not the host
    if placement("host").target.s8_saturates is False:
        assert results["host"].agreement == 1.0


def test_u8u8_weights_are_the_same_model_and_exact_on_every_target(tmp_path):
    from edgepipe.quant.u8u8 import weights_to_uint8

    path = _saturating_model(tmp_path / "u8u8.onnx", 127)
    assert weights_to_uint8(path) == 1
    results = _run(path, X, EXACT)
    assert {t: r.agreement for t, r in results.items()} == {"host": 1.0, **{n: 1.0 for n in EMULATED}}


def test_7_bit_qat_mobilenet_agrees_on_every_target(tmp_path):
    """The default numerics (s7) end to end: a calibrated tiny QAT MobileNetV3 exported as int8.onnx runs the
    same integers natively, as an AVX2 CPU and as a Cortex-A76."""
    import onnx
    from onnx import numpy_helper

    from edgepipe.quant.export import export_onnx
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits
    from tests.conftest import calibrated_qdq_mnv3

    path = export_onnx(calibrated_qdq_mnv3(), tmp_path / "int8.onnx", [3, 32, 32], {}, 17, qdq=True)
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]  # fmt: skip
    assert weights and min(w.min() for w in weights) >= -64 and max(w.max() for w in weights) <= 63
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    ref = runtime_logits(get_runtime("onnxruntime", path, threads=1), x)
    results = _run(path, x, ref)
    assert {t: r.agreement for t, r in results.items()} == {"host": 1.0, **{n: 1.0 for n in EMULATED}}
