"""TF-"SAME" padding (EfficientNet-Lite): the exported Pad folds into the Conv; ORT runs a QLinearConv."""

import collections

import numpy as np
import onnx
import torch
import torch.nn as nn

from edgepipe.models.efficientnet_lite import _SamePad
from edgepipe.quant.export import export_onnx, torchscript_export
from edgepipe.quant.qat import (
    freeze_bn_stats,
    freeze_observers,
    fuse_conv_bn_relu6,
    prepare_qat,
    quant_stubs,
)
from edgepipe.quant.qdq import to_qdq_module


class _PadConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = quant_stubs()
        self.pad = _SamePad(5, 2)
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 5, 2, bias=False), nn.BatchNorm2d(8), nn.ReLU6()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 3)

    def forward(self, x):
        x = self.act(self.bn(self.conv(self.pad(self.quant(x)))))
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))

    def fuse_model(self, is_qat=None):
        fuse_conv_bn_relu6(self, [["conv", "bn", "act"]], is_qat=bool(is_qat))


def _session(path, optimized=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_pad_folds_into_conv_and_runs_as_qlinearconv(tmp_path):
    torch.manual_seed(0)
    model = prepare_qat(_PadConvNet())
    for _ in range(3):
        model(torch.randn(8, 3, 16, 16))
    freeze_observers(model)
    freeze_bn_stats(model)
    qdq = to_qdq_module(model.eval())
    path, raw = tmp_path / "int8.onnx", tmp_path / "raw.onnx"
    export_onnx(qdq, path, [3, 16, 16], {}, 17, qdq=True)
    torchscript_export(qdq, torch.zeros(1, 3, 16, 16), raw, 17)  # the exporter's graph, Pad still there

    graph = onnx.load(str(path)).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["Pad"] == 0 and ops["Slice"] == ops["ConstantOfShape"] == 0
    conv = next(n for n in graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 2, 2]  # asymmetric
    _session(path, tmp_path / "opt.onnx")
    fused = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert fused["QLinearConv"] == 1 and fused["Conv"] == 0

    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16), dtype=np.float32)
    folded, unfolded = (_session(p).run(None, {"input": x})[0] for p in (path, raw))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(folded, unfolded, atol=0.05)
    np.testing.assert_allclose(folded, ref, atol=0.05)
