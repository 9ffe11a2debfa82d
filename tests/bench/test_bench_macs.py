"""count_macs must give exact, format-independent MACs: FP32, QDQ and QOperator twins count the same."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from edgepipe.bench.macs import count_macs, thop_macs
from edgepipe.errors import BenchInputError
from tests.conftest import export_onnx, ort_quantize

# Hand count at 1x3x32x32 (bias adds are not MACs):
#   conv 3->8 k3:        8*32*32 * 3*3*3 = 221184
#   depthwise 8 k3 g=8:  8*32*32 * 1*3*3 =  73728
#   pointwise 8->16 k1: 16*32*32 * 8     = 131072
#   linear 16->10:      10 * 16          =    160
TINY_MACS = 221184 + 73728 + 131072 + 160
TINY_PARAMS = (8 * 27 + 8) + (8 * 9 + 8) + (16 * 8 + 16) + (10 * 16 + 10)


class Tiny(nn.Module):
    """Pooling and ReLU are functional so thop counts exactly the same MACs as the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pw(F.relu(self.dw(F.relu(self.c1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    paths = {"fp32": export_onnx(Tiny(), root / "fp32.onnx")}
    for fmt in ("qdq", "qop"):
        paths[fmt] = ort_quantize(paths["fp32"], root / f"{fmt}.onnx", fmt)
    return paths


def test_fp32_matches_hand_count_and_thop(tiny: dict[str, Path]) -> None:
    result = count_macs(tiny["fp32"])
    assert result["macs"] == TINY_MACS
    assert result["by_op_type"] == {"Conv": TINY_MACS - 160, "Gemm": 160}
    assert result["params"] == TINY_PARAMS
    assert result["gflops"] == pytest.approx(2 * TINY_MACS / 1e9)
    assert result["int8_macs"] == 0 and result["int8_mac_share"] == 0
    torch.manual_seed(0)
    assert thop_macs(Tiny(), (1, 3, 32, 32)) == pytest.approx(TINY_MACS, rel=0.05)


@pytest.mark.parametrize("fmt, compute_ops", [("qdq", {"Conv", "Gemm"}), ("qop", {"QLinearConv", "QGemm"})])
def test_int8_twins_count_like_fp32(tiny: dict[str, Path], fmt: str, compute_ops: set[str]) -> None:
    fp32, int8 = count_macs(tiny["fp32"]), count_macs(tiny[fmt])
    assert set(int8["by_op_type"]) == compute_ops
    assert int8["macs"] == fp32["macs"] == TINY_MACS
    assert int8["params"] == fp32["params"] == TINY_PARAMS
    assert int8["int8_mac_share"] > 0.5


def test_batch_scales_macs_linearly(tiny: dict[str, Path]) -> None:
    for path in tiny.values():
        one, four = count_macs(path, batch=1), count_macs(path, batch=4)
        assert four["macs"] == 4 * one["macs"]
        assert four["batch"] == 4 and four["params"] == one["params"]


def test_accepts_model_proto_without_mutating_it(tiny: dict[str, Path]) -> None:
    proto = onnx.load(str(tiny["fp32"]))
    before = proto.SerializeToString()
    assert count_macs(proto, batch=2)["macs"] == 2 * TINY_MACS
    assert proto.SerializeToString() == before


def test_batched_matmul_and_conv_transpose_hand_built() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "b"], ["ab"]),
            helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2]),
        ],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2, 4, 5]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2, 5, 6]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 7, 7]),
        ],
        [
            helper.make_tensor_value_info("ab", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 2, 2], [0.0] * 48)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = count_macs(model, batch=3)
    assert result["by_op_type"] == {"MatMul": 3 * 2 * 4 * 5 * 6, "ConvTranspose": 3 * 4 * 7 * 7 * 3 * 2 * 2}
    assert result["params"] == 48


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, weights", [("resnet18", "ResNet18_Weights"), ("mobilenet_v2", "MobileNet_V2_Weights")]
)
def test_torchvision_models_match_published_gmacs(tmp_path: Path, arch: str, weights: str) -> None:
    import torchvision

    reference = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["_ops"]  # GMACs: 1.814 / 0.301
    model = getattr(torchvision.models, arch)(weights=None)
    result = count_macs(export_onnx(model, tmp_path / f"{arch}.onnx", (1, 3, 224, 224)))
    assert result["gmacs"] == pytest.approx(reference, rel=0.02)
    # BN is folded into conv biases on export: params differ from torch only by those per-channel terms.
    assert result["params"] == pytest.approx(sum(p.numel() for p in model.parameters()), rel=0.01)


def test_non_model_file_is_rejected(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(BenchInputError, match="fix:"):
        count_macs(text)
    with pytest.raises(BenchInputError, match="does not exist"):
        count_macs(tmp_path / "missing.onnx")


def test_bad_batch_and_symbolic_image_size_are_rejected(tiny: dict[str, Path]) -> None:
    with pytest.raises(BenchInputError, match="batch"):
        count_macs(tiny["fp32"], batch=0)
    proto = onnx.load(str(tiny["fp32"]))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(BenchInputError, match="'input'.*height"):
        count_macs(proto)
    fixed = onnx.load(str(tiny["fp32"]))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(BenchInputError, match="fixed batch of 1"):
        count_macs(fixed, batch=4)


class _SamePadStem(nn.Module):
    """TF-"SAME" padding computed from the input size, as EfficientNet-Lite's stem: the exporter writes the
    pads as a ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Cast chain that ONNX shape
    inference cannot see through."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):
            total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.relu(self.conv(F.pad(x, pads)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_pad_fed_by_a_constant_chain_is_sized_in_fp32_and_qdq(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fp32 = export_onnx(_SamePadStem(), tmp_path / "pad.onnx")
    ops = {n.op_type for n in onnx.load(str(fp32)).graph.node}
    assert {"Pad", "ConstantOfShape", "Transpose"} <= ops  # the chain is really there
    qdq = ort_quantize(fp32, tmp_path / "pad_qdq.onnx")
    # 32 -> pad (0, 1) -> 33 -> k3 s2 -> 16x16; then linear 8 -> 4
    expected = 8 * 16 * 16 * 27 + 8 * 4
    for path in (fp32, qdq):
        result = count_macs(path)
        assert result["macs"] == expected
        assert result["nodes"] == len(onnx.load(str(path)).graph.node)  # counted on the graph as given
    assert count_macs(qdq)["int8_mac_share"] > 0.9
