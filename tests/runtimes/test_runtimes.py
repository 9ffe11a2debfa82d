"""Runtimes agree with torch, pin their settings, reject bad input, and account INT8 ops honestly."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.errors import BenchInputError
from edgepipe.runtimes import get_runtime
from tests.conftest import export_onnx, ort_quantize

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")


def _tiny_cnn():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Hardswish(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(module, fp32 onnx path, QDQ int8 onnx path), built once for the whole file."""
    d = tmp_path_factory.mktemp("tiny")
    model = _tiny_cnn()
    path = export_onnx(model, d / "tiny.onnx")
    return model, path, ort_quantize(path, d / "tiny_qdq.onnx")


def _ref(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 32, 32), dtype=np.float32)


def test_ort_matches_torch(tiny):
    model, path, _ = tiny
    rt = get_runtime("onnxruntime", path, threads=1)
    for n in (1, 4):
        np.testing.assert_allclose(rt.predict(_batch(n)), _ref(model, _batch(n)), atol=1e-4, rtol=0)
    assert rt.describe()["options"]["threads"] == 1
    assert rt.input_shape == (None, 3, 32, 32)


def test_torch_runtime_restores_threads(tiny):
    model, _, _ = tiny
    before = torch.get_num_threads()
    rt = get_runtime("torch", model, threads=1)
    np.testing.assert_allclose(rt.predict(_batch(2)), _ref(model, _batch(2)), atol=1e-6)
    assert torch.get_num_threads() == before


def test_openvino_f32_matches_torch_and_reports_precision(tiny):
    model, path, _ = tiny
    rt = get_runtime("openvino", path, threads=1, precision="f32")
    for n in (1, 4):
        np.testing.assert_allclose(rt.predict(_batch(n)), _ref(model, _batch(n)), atol=1e-3, rtol=0)
    desc = rt.describe()
    assert desc["options"]["effective"]["precision"] == "f32"
    assert desc["options"]["effective"]["threads"] == 1
    assert desc["options"]["effective"]["hint"] == "LATENCY"
    assert [1, 3, 32, 32] in desc["compiled_shapes"] and [4, 3, 32, 32] in desc["compiled_shapes"]


def test_openvino_bf16_reported(tiny):
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("CPU has no native BF16")
    _, path, _ = tiny
    rt = get_runtime("openvino", path, threads=1, precision="bf16")
    assert rt.describe()["options"]["effective"]["precision"] == "bf16"


def test_convert_to_ir_runs_and_matches(tiny, tmp_path):
    from edgepipe.runtimes.openvino import convert_to_ir

    model, path, _ = tiny
    xml = convert_to_ir(path, tmp_path / "ir" / "tiny.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["tiny.bin", "tiny.xml"]  # no temp leftovers
    rt = get_runtime("openvino", xml, threads=1, precision="f32")
    np.testing.assert_allclose(rt.predict(_batch(2)), _ref(model, _batch(2)), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_text_file_rejected(tmp_path, name):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n")
    with pytest.raises(BenchInputError, match="not an ONNX model"):
        get_runtime(name, bad, threads=1)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_wrong_input_shape_rejected(tiny, name):
    _, path, _ = tiny
    rt = get_runtime(name, path, threads=1)
    with pytest.raises(BenchInputError, match=r"expects input shape .*got \(1, 3, 31, 32\)"):
        rt.predict(np.zeros((1, 3, 31, 32), np.float32))
    with pytest.raises(BenchInputError, match="dtype"):
        rt.predict(np.zeros((1, 3, 32, 32), np.float64))


def test_missing_provider_and_device_are_unavailable(tiny):
    from edgepipe.errors import RuntimeUnavailable

    with pytest.raises(RuntimeUnavailable, match="CPUExecutionProvider"):
        get_runtime("onnxruntime", tiny[1], providers=["NoSuchExecutionProvider"])
    with pytest.raises(RuntimeUnavailable, match="CPU"):
        get_runtime("openvino", tiny[1], device="NOSUCHDEVICE")


def test_unknown_runtime_rejected(tiny):
    with pytest.raises(BenchInputError, match="onnxruntime, openvino, torch"):
        get_runtime("tensorrt", tiny[1])


def test_int8_op_accounts(tiny):
    from edgepipe.runtimes.onnxruntime import ort_op_account
    from edgepipe.runtimes.openvino import ov_op_account

    _, _, qpath = tiny
    x = _batch(1)
    ort_acc = ort_op_account(qpath, threads=1, sample=x, runs=3)
    assert any(op.startswith("QLinearConv") for op in ort_acc["int8_ops"]), ort_acc["optimized_op_counts"]
    assert ort_acc["time_by_op_type_us"] and 0 < ort_acc["int8_time_share"] <= 1

    ov_acc = ov_op_account(qpath, precision="f32", threads=1, sample=x, runs=3)
    assert ov_acc["precision_counts"].get("u8", 0) + ov_acc["precision_counts"].get("i8", 0) > 0
    convs = [o for o in ov_acc["ops"] if o["type"] == "Convolution"]
    assert convs and all(o["precision"] in ("u8", "i8") for o in convs), convs
    assert 0 < ov_acc["int8_time_share"] <= 1
