"""The IR we ship has batch 1 fixed (OpenVINO compiles a dynamic batch into slower kernels), and our loader
still runs any batch from it."""

from __future__ import annotations

import numpy as np
import torch

from edgepipe.runtimes.openvino import OpenVinoRuntime, convert_to_ir, static_batch
from tests.conftest import export_onnx


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def test_convert_to_ir_fixes_a_dynamic_batch_to_one_and_the_loader_runs_any_batch(tmp_path):
    import openvino as ov

    net = _net()
    xml = convert_to_ir(export_onnx(net, tmp_path / "m.onnx"), tmp_path / "m.xml")
    shape = ov.Core().read_model(str(xml)).inputs[0].get_partial_shape()
    assert shape.is_static and [d.get_length() for d in shape] == [1, 3, 32, 32]
    rt = OpenVinoRuntime(xml, threads=1, precision="f32")
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.predict(x), want, atol=1e-4)
    np.testing.assert_allclose(rt.predict(x[:1]), want[:1], atol=1e-4)


def test_static_batch_leaves_static_and_other_dynamic_models_alone(tmp_path):
    import openvino as ov

    core = ov.Core()
    fixed = core.read_model(str(export_onnx(_net(), tmp_path / "s.onnx", dynamic=False)))
    assert static_batch(fixed) is False
    dyn = core.read_model(str(export_onnx(_net(), tmp_path / "d.onnx")))
    assert static_batch(dyn, 4) is True
    assert [d.get_length() for d in dyn.inputs[0].get_partial_shape()] == [4, 3, 32, 32]
