"""OpenVINO's precision policy: float models pinned to f32, quantized ones at the plugin default ('auto'),
and the native low-precision floats read from the device, never assumed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgepipe.errors import BenchInputError

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def _export(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(float onnx, QDQ onnx) of a two-layer CNN."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    d = tmp_path_factory.mktemp("ovprec")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten()).eval()
    fp = _export(net, d / "fp.onnx")
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)

    q = d / "q.onnx"
    quantize_static(str(fp), str(q), Reader(), quant_format=QuantFormat.QDQ)
    return fp, q


def test_auto_pins_float_models_to_f32_and_leaves_quantized_at_default(models):
    from edgepipe.runtimes import get_runtime

    fp, q = models
    rt_fp = get_runtime("openvino", fp, threads=1)
    assert rt_fp.options["requested_precision"] == "auto"
    assert rt_fp.options["precision"] == "f32" and rt_fp.effective["precision"] == "f32"
    rt_q = get_runtime("openvino", q, threads=1)
    assert rt_q.options["precision"] == "default"
    assert "INFERENCE_PRECISION_HINT" not in rt_q.config


def test_explicit_precision_is_kept_for_quantized_models(models):
    from edgepipe.runtimes import get_runtime

    rt = get_runtime("openvino", models[1], threads=1, precision="f32")
    assert rt.config["INFERENCE_PRECISION_HINT"] == "f32" and rt.effective["precision"] == "f32"


def test_is_quantized_reads_fakequantize(models):
    from edgepipe.runtimes.openvino import is_quantized

    core = ov.Core()
    assert not is_quantized(core.read_model(str(models[0])))
    assert is_quantized(core.read_model(str(models[1])))


def test_compile_config_refuses_unresolved_auto_and_unknown_precision():
    from edgepipe.runtimes.openvino import compile_config

    with pytest.raises(BenchInputError, match="resolve_precision"):
        compile_config("CPU", 1, "auto", "LATENCY")
    with pytest.raises(BenchInputError, match="unknown OpenVINO precision 'fp64'"):
        compile_config("CPU", 1, "fp64", "LATENCY")


def test_native_float_precisions_follow_the_device_capabilities(monkeypatch):
    from edgepipe.runtimes import openvino as ovrt

    class Core:
        caps = ["FP32", "INT8"]

        def get_property(self, device, key):
            assert key == "OPTIMIZATION_CAPABILITIES"
            return self.caps

    class Fake:
        pass

    fake = Fake()
    fake.Core = Core
    monkeypatch.setattr(ovrt, "_ov", lambda: fake)
    assert ovrt.native_float_precisions() == ("f32",)
    Core.caps = ["BF16", "FP32", "INT8"]
    assert ovrt.native_float_precisions() == ("f32", "bf16")
    Core.caps = ["FP16", "BF16", "FP32"]
    assert ovrt.native_float_precisions() == ("f32", "bf16", "f16")


def test_float_modes_name_each_runtimes_native_floats(monkeypatch):
    from edgepipe.runtimes import float_modes
    from edgepipe.runtimes import openvino as ovrt

    monkeypatch.setattr(ovrt, "native_float_precisions", lambda device="CPU": ("f32", "bf16"))
    assert float_modes("onnxruntime") == [("f32", {})]
    assert float_modes("openvino") == [("f32", {"precision": "f32"}), ("bf16", {"precision": "bf16"})]
    with pytest.raises(BenchInputError, match="unknown runtime"):
        float_modes("tensorrt")
