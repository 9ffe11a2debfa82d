"""The OpenVINO-shaped INT8 graph: HardSwish fused into its convolution (no Q/DQ between them), the
squeeze-excite branch in float, the same function as the ONNX Runtime graph up to the dropped roundings."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from edgepipe.quant.export import export_onnx
from edgepipe.runtimes.registry import runtime_spec
from tests.conftest import calibrated_qdq_mnv3


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    qdq = calibrated_qdq_mnv3()
    d = tmp_path_factory.mktemp("ovshape")
    out = {}
    for rt in ("onnxruntime", "openvino"):  # each in the Q/DQ placement its registry entry asks for
        shape = runtime_spec(rt).qdq
        out[rt] = export_onnx(qdq, d / f"{rt}.onnx", [3, 32, 32], {}, 17, qdq=True, qdq_shape=shape)
    return out


def _load(path):
    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    return g, producer


def test_hardswish_reads_its_convolution_directly(graphs):
    g, producer = _load(graphs["openvino"])
    hs = [n for n in g.node if n.op_type == "HardSwish"]
    assert hs, collections.Counter(n.op_type for n in g.node)
    assert all(producer[n.input[0]].op_type in ("Conv", "Gemm") for n in hs)  # Gemm: the classifier's
    # the gate rounding (HardSigmoid -> Q -> DQ -> Mul with the same input) is gone everywhere
    g_ort, _ = _load(graphs["onnxruntime"])
    assert not [n for n in g_ort.node if n.op_type == "HardSwish"]


def test_squeeze_excite_branch_is_float(graphs):
    g, producer = _load(graphs["openvino"])
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    gaps = [n for n in g.node if n.op_type == "GlobalAveragePool"]
    se = [n for n in gaps if consumers[n.output[0]] and consumers[n.output[0]][0].op_type == "Conv"]
    assert se, "expected squeeze-excite pools feeding a Conv directly"
    for gap in se:
        fc1 = consumers[gap.output[0]][0]
        relu = consumers[fc1.output[0]][0]
        assert relu.op_type == "Relu" and consumers[relu.output[0]][0].op_type == "Conv"


def test_openvino_graph_computes_what_the_onnxruntime_graph_does(graphs):
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # reference float Q/DQ math
    a, b = (ort.InferenceSession(str(graphs[t]), so).run(None, {"input": x})[0] for t in graphs)
    # only roundings are dropped (conv outputs before HardSwish, the gate, the SE activations)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max() + 1e-3


def test_openvino_fuses_more_of_the_shaped_graph(graphs):
    ov = pytest.importorskip("openvino")
    core = ov.Core()

    def layers(path):
        c = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1})
        return collections.Counter(
            op.get_rt_info()["layerType"].astype(str) for op in c.get_runtime_model().get_ordered_ops()
        )

    shared, shaped = layers(graphs["onnxruntime"]), layers(graphs["openvino"])
    assert shaped["FakeQuantize"] + shaped["Eltwise"] < shared["FakeQuantize"] + shared["Eltwise"]
    assert shaped["Convolution"] == shared["Convolution"]


def test_export_rejects_an_unknown_qdq_shape(tmp_path):
    with pytest.raises(ValueError, match="unknown QDQ shape"):
        export_onnx(torch.nn.Identity(), tmp_path / "x.onnx", [3, 4, 4], {}, 17, qdq=True, qdq_shape="tvm")
