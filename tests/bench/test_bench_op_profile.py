"""ONNX Runtime time by op class: each Conv and Gemm classified (also behind DequantizeLinear in a QDQ graph),
node times from ORT's profile, and no profile file left in the working directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgepipe.bench.op_profile import conv_classes, ort_op_classes
from tests.conftest import export_onnx, ort_quantize

pytest.importorskip("onnxruntime")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("op_profile")
    fp32 = export_onnx(_net(), d / "fp32.onnx", (1, 3, 16, 16))
    return fp32, ort_quantize(fp32, d / "qdq.onnx", shape=(1, 3, 16, 16))


@pytest.mark.parametrize("which", [0, 1], ids=["float", "qdq"])
def test_convs_are_classified_by_group_and_input_channels_also_behind_dequantize(models, which):
    import onnx

    graph = onnx.load(str(models[which])).graph
    kinds = conv_classes(graph)
    by_node = [kinds[n.name] for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert by_node == ["first conv", "depthwise conv", "conv 1x1/kxk", "classifier (Gemm)"]


def test_op_classes_sum_node_times_with_their_macs_and_leave_no_profile_behind(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.zeros((1, 3, 16, 16), np.float32)
    out = ort_op_classes(models[0], threads=1, sample=x, runs=3)
    classes = out["classes"]
    assert {"first conv", "depthwise conv", "conv 1x1/kxk"} <= set(classes)
    assert classes["depthwise conv"]["gmacs"] == pytest.approx(8 * 9 * 16 * 16 / 1e9)
    assert sum(c["nodes"] for c in classes.values()) == len(out["nodes"])
    node_ms = sum(n["ms"] for n in out["nodes"].values())
    assert sum(c["ms"] for c in classes.values()) == pytest.approx(node_ms, abs=1e-3)
    assert list(tmp_path.iterdir()) == []
