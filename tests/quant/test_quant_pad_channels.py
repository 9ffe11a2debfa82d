"""quant/pad_channels.py: depthwise widths padded onto ONNX Runtime's fast kernel, the same function."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgepipe.quant.export import export_onnx, read_metadata
from edgepipe.quant.pad_channels import pad_depthwise_channels
from tests.conftest import calibrated_qdq_mnv3


def _depthwise_widths(model: onnx.ModelProto) -> list[int]:
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    widths = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1:
            w = numpy_helper.to_array(inits[producer[n.input[1]].input[0]])
            assert w.shape[0] == group, "a padded depthwise conv's filters and group disagree"
            widths.append(group)
    return widths


def _logits(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny MobileNetV3 (width 0.25: depthwise widths 16, 24, 40, 48, 72, 88, 144...) exported
    unpadded and padded."""
    tmp = tmp_path_factory.mktemp("pad")
    qdq = calibrated_qdq_mnv3()
    plain, padded = tmp / "plain.onnx", tmp / "padded.onnx"
    export_onnx(qdq, plain, [3, 32, 32], {}, 17, qdq=True, pad_channels=0)
    export_onnx(qdq, padded, [3, 32, 32], {}, 17, qdq=True)
    return plain, padded


def test_every_depthwise_width_becomes_a_multiple_of_16(exported):
    plain, padded = exported
    before, after = _depthwise_widths(onnx.load(str(plain))), _depthwise_widths(onnx.load(str(padded)))
    assert any(w % 16 for w in before), "the fixture should have widths to pad"
    assert all(w % 16 == 0 for w in after)
    assert [-(-w // 16) * 16 for w in before] == after
    stamped = read_metadata(padded)["padded_channels"]
    want = [(w, -(-w // 16) * 16) for w in before if w % 16]
    assert [(r["channels"], r["padded"]) for r in stamped] == want


def test_padded_graph_computes_the_same_logits_bit_for_bit(exported):
    plain, padded = exported
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(_logits(plain, x), _logits(padded, x))


def test_padded_graph_still_runs_every_conv_as_an_integer_kernel(exported, tmp_path):
    """The padded scales keep bias scale = input scale x weight scale, so ORT still fuses every Conv into a
    QLinearConv (a constant fill of 1.0 broke that: the convs ran in float). Read from ORT's optimized
    graph, not from a timed profile."""
    from collections import Counter

    from edgepipe.runtimes.onnxruntime import make_session

    _, padded = exported
    optimized = tmp_path / "optimized.onnx"
    make_session(padded, 1, optimized_model_filepath=str(optimized), log_severity_level=3)
    ran = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(padded)).graph.node)
    assert convs > 0 and ran["QLinearConv"] == convs, ran
    assert not {"Conv", "FusedConv", "NhwcFusedConv"} & set(ran), ran


def test_a_group_that_reaches_the_graph_output_is_left_alone():
    """A depthwise conv whose channels are the graph's output cannot be padded: recorded, not changed."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((24, 1, 3, 3), np.int8), "w")
    scale = numpy_helper.from_array(np.full(24, 0.1, np.float32), "ws")
    zp = numpy_helper.from_array(np.zeros(24, np.int8), "wz")
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["x", "wf"], ["y"], name="dw", group=24, pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 8, 8])
    graph = helper.make_graph(nodes, "g", [x], [y], [w, scale, zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    records = pad_depthwise_channels(model)
    assert records == [{"depthwise": "dw", "channels": 24, "padded": None, "reason": "not paddable"}]
    assert _depthwise_widths(model) == [24]


def test_padding_is_layout_not_compute_macs_and_params_count_the_model(exported):
    """The zero channels are counted out (bench/macs.py reads the metadata): the padded graph reports the
    MACs and parameters of the unpadded one, node by node, so INT8 and FP32 twins still count the same."""
    from edgepipe.bench.macs import count_macs

    plain, padded = (count_macs(p) for p in exported)
    assert padded["by_node"] == plain["by_node"]
    assert (padded["macs"], padded["params"]) == (plain["macs"], plain["params"])
