from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepipe.quant.graph import Graph


def _model() -> onnx.ModelProto:
    """x + DQ(int8 w) and a pads tensor built from constants (Concat of a Cast), plus a dead Constant."""
    inits = [
        numpy_helper.from_array(np.array([-3, 0, 5], np.int8), "w"),
        numpy_helper.from_array(np.array(0.5, np.float32), "s"),
        numpy_helper.from_array(np.array(1, np.int8), "zp"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "a"),
        numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "b"),
        numpy_helper.from_array(np.ones(2, np.float32), "unused"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["w_dq"]),
        helper.make_node("Add", ["x", "w_dq"], ["y"]),
        helper.make_node("Cast", ["b"], ["b64"], to=TensorProto.INT64),
        helper.make_node("Concat", ["a", "b64"], ["pads"], axis=0),
        helper.make_node("Constant", [], ["dead"], value=numpy_helper.from_array(np.ones(1, np.float32))),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_value_folds_constant_chains_and_dequantized_weights():
    gr = Graph(_model())
    assert gr.value("pads").tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(gr.value("w_dq"), np.array([-2.0, -0.5, 2.0], np.float32))
    assert gr.const("pads") is None  # const: only values stored as such


def test_value_of_a_tensor_that_depends_on_an_input_is_none():
    gr = Graph(_model())
    assert gr.value("x") is None and gr.value("y") is None


def test_drop_unused_removes_dead_nodes_and_initializers():
    model = _model()
    gr = Graph(model)
    gr.drop_unused()
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Add"]
    assert sorted(i.name for i in model.graph.initializer) == ["s", "w", "zp"]
    onnx.checker.check_model(model)
