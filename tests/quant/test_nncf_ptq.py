"""ptq.method: nncf: NNCF's quantizers produce an integer ONNX for ONNX Runtime and an IR for OpenVINO, and a
missing NNCF is one line naming the extra to install."""

from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest

from edgepipe.errors import RecipeError, RuntimeUnavailable
from edgepipe.recipe import parse_recipe

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    from edgepipe.quant.export import export_onnx

    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()
    path = tmp_path_factory.mktemp("nncf") / "fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(net, path, [3, 16, 16], {"classes": ["a", "b", "c", "d"]}, 17)
    return path


def _calib(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 16, 16), dtype=np.float32)


def test_nncf_onnx_is_integer_for_onnxruntime_and_keeps_metadata(fp32_onnx, tmp_path):
    pytest.importorskip("nncf")
    from edgepipe.quant.export import read_metadata
    from edgepipe.quant.nncf_ptq import nncf_quantize_onnx
    from edgepipe.runtimes.onnxruntime import ort_op_account

    out = nncf_quantize_onnx(fp32_onnx, tmp_path / "q.onnx", _calib(), {"precision": "int8-ptq"})
    assert read_metadata(out)["precision"] == "int8-ptq"
    acc = ort_op_account(out, threads=1, sample=_calib(1), runs=2)
    assert "QLinearConv" in acc["int8_ops"], acc["optimized_op_counts"]


def test_nncf_ir_is_quantized_for_openvino(fp32_onnx, tmp_path):
    pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from edgepipe.quant.nncf_ptq import nncf_quantize_ir
    from edgepipe.runtimes.openvino import is_quantized

    xml = nncf_quantize_ir(fp32_onnx, tmp_path / "q.xml", _calib())
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert not list(tmp_path.glob(".*tmp*"))
    assert is_quantized(ov.Core().read_model(str(xml)))


def test_missing_nncf_names_the_extra(fp32_onnx, tmp_path, monkeypatch):
    from edgepipe.quant import nncf_ptq

    real_import = builtins.__import__

    def no_nncf(name, *args, **kwargs):
        if name == "nncf" or name.startswith("nncf."):
            raise ImportError("No module named 'nncf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nncf)
    with pytest.raises(RuntimeUnavailable, match=r"edgepipe\[nncf\].*ptq.method: ort"):
        nncf_ptq.nncf_quantize_onnx(fp32_onnx, tmp_path / "q.onnx", _calib(), {})
    assert not (tmp_path / "q.onnx").exists()


def test_recipe_ptq_method_and_ort_only_calibration():
    base = {"name": "r", "data": {"dataset": "fashion-mnist"}, "model": {"arch": "mobilenet_v3_large"}}
    assert parse_recipe({**base, "ptq": {"method": "nncf"}}).ptq.method == "nncf"
    assert parse_recipe(base).ptq.method == "ort"
    with pytest.raises(RecipeError, match="calibration is an ONNX Runtime option"):
        parse_recipe({**base, "ptq": {"method": "nncf", "calibration": "entropy"}})
    with pytest.raises(RecipeError, match="method"):
        parse_recipe({**base, "ptq": {"method": "tensorrt"}})
