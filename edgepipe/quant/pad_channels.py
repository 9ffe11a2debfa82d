"""Depthwise widths padded to a multiple of 16 in a QDQ graph, so ONNX Runtime runs them on its fast kernel.

ONNX Runtime's x86 int8 depthwise kernel (MLAS) needs the channel count to be a multiple of 16; other widths
run a generic kernel plus a separate requantize pass, measured 2-3x slower than the float depthwise conv on a
Zen 5 (MobileNetV3-Large's 72, 120, 184 and 200; docs/int8.md). This pass widens each such depthwise conv,
and everything that shares its channels, with channels that are exactly zero:

* the conv that produces the channels (the 1x1 expand, or an SE block's second FC) gets zero filters with a
  zero bias, so the new channels are 0 (a quantized 0 is exactly its zero-point, and ReLU, HardSwish and the
  integer HardSwish/HardSigmoid of onnx_qdq.py keep 0 at 0; an SE gate over a zero channel multiplies 0);
* the depthwise conv gets zero filters and ``group`` = the padded width;
* the convs that consume the channels (the 1x1 projection, an SE block's first FC) get zero input weights,
  so the new channels add nothing.

The output is the same function, to the bit, as the integer kernels compute it (tests/quant/
test_quant_pad_channels.py). The padded channels are real work: the graph's MAC count (bench/macs.py)
rises by a few percent, and the speed-up is measured against that (benchmarks/int8_speedup.py). A group of
channels that reaches anything this pass does not understand (a graph input or output, a residual add with
another width, a Reshape) is left as it is.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgepipe.quant.graph import Graph

MULTIPLE = 16
# ops through which a channel passes unchanged (others inputs: scalar constants, or channels of the group)
_ELEMENTWISE = {"QuantizeLinear", "DequantizeLinear", "Relu", "Clip", "Add", "Mul", "Sub", "Div", "HardSwish",
                "HardSigmoid", "Sigmoid", "LeakyRelu"}
_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"}


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _scalar(gr: Graph, name: str) -> bool:
    """A constant of one element, or one folded from such (Q/DQ of the integer HardSwish's 3 and 1/6)."""
    if not name:
        return True
    value = gr.value(name)
    return value is not None and value.size == 1


def _weight(gr: Graph, conv: onnx.NodeProto, k: int) -> tuple[onnx.NodeProto, np.ndarray] | None:
    """The DequantizeLinear behind a Conv's weight (k=1) or bias (k=2), with its integer initializer."""
    if len(conv.input) <= k or not conv.input[k]:
        return None
    dq = gr.producer.get(conv.input[k])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in gr.inits:
        return None
    return dq, numpy_helper.to_array(gr.inits[dq.input[0]])


def _depthwise(gr: Graph, conv: onnx.NodeProto) -> int:
    w = _weight(gr, conv, 1)
    if conv.op_type != "Conv" or w is None:
        return 0
    c = w[1].shape[0]
    return c if _attr(conv, "group", 1) == c > 1 and w[1].shape[1] == 1 else 0


def _group(gr: Graph, start: onnx.NodeProto, outputs: set[str]) -> dict[str, set[str]] | None:
    """The convs that share ``start``'s channels, each with its roles ("in": the channels are its output,
    "dw": its input and output, "out": its input), or None where the group reaches what cannot be padded."""
    roles: dict[str, set[str]] = {}
    seen: set[str] = set()
    todo = deque([start.input[0], start.output[0]])
    inputs = {i.name for i in gr.g.input}
    while todo:
        t = todo.popleft()
        if t in seen:
            continue
        seen.add(t)
        if t in outputs or t in inputs:
            return None
        around = [(gr.producer.get(t), "produces")] + [(n, "consumes") for n in gr.consumers.get(t, [])]
        for node, how in around:
            if node is None:
                return None
            if node.op_type == "Conv":
                as_weight = how == "consumes" and node.input[0] != t
                if as_weight or _weight(gr, node, 1) is None or not node.name:
                    return None  # the channels as a weight, a float conv, or a conv we cannot name
                role = "dw" if _depthwise(gr, node) else ("in" if how == "produces" else "out")
                roles.setdefault(node.name, set()).add(role)
                if role == "dw":
                    todo.extend([node.input[0], node.output[0]])
                continue
            if node.op_type in _POOLS or node.op_type in _ELEMENTWISE:
                qdq = node.op_type in ("QuantizeLinear", "DequantizeLinear")
                if qdq and not all(_scalar(gr, i) for i in node.input[1:]):
                    return None  # per-channel activation quantization: not padded here
                todo.extend(node.input[:1] if qdq else [i for i in node.input if not _scalar(gr, i)])
                todo.extend(node.output)
                continue
            return None
    return roles


def _pad_init(gr: Graph, dq: onnx.NodeProto, k: int, axis: int, width: int, fill: float | None) -> None:
    """Replace input ``k`` of ``dq`` (an initializer) by a copy padded along ``axis`` to ``width`` with
    ``fill``, or (None) with its last entry: a scale keeps bias scale = input scale x weight scale, which
    ONNX Runtime checks before it fuses the conv into an integer kernel."""
    name = dq.input[k]
    if not name or name not in gr.inits:
        return
    value = numpy_helper.to_array(gr.inits[name])
    if value.ndim == 0 or value.shape[axis] == width:
        return
    pad = [(0, 0)] * value.ndim
    pad[axis] = (0, width - value.shape[axis])
    padded = np.pad(value, pad, mode="edge") if fill is None else np.pad(value, pad, constant_values=fill)
    dq.input[k] = gr.add_init(f"pad{width}_{name}", padded.astype(value.dtype))


def _pad_conv(gr: Graph, conv: onnx.NodeProto, roles: set[str], width: int) -> None:
    wdq, _ = _weight(gr, conv, 1)
    if roles & {"in", "dw"}:  # output channels: filters, their scales and zero-points, the bias
        _pad_init(gr, wdq, 0, 0, width, 0)
        _pad_init(gr, wdq, 1, 0, width, None)
        _pad_init(gr, wdq, 2, 0, width, 0)
        bias = _weight(gr, conv, 2)
        if bias is not None:
            for k, fill in ((0, 0), (1, None), (2, 0)):
                _pad_init(gr, bias[0], k, 0, width, fill)
    if "dw" in roles:
        for a in conv.attribute:
            if a.name == "group":
                a.i = width
    if "out" in roles:  # input channels: zero weights (scales are per output channel, unchanged)
        _pad_init(gr, wdq, 0, 1, width, 0)


def pad_depthwise_channels(model: onnx.ModelProto, multiple: int = MULTIPLE) -> list[dict[str, Any]]:
    """Pad every depthwise conv of ``model`` whose width is not a multiple of ``multiple`` (in place);
    returns one record per padded group: its convs, their roles, the width before and after."""
    gr = Graph(model)
    outputs = {o.name for o in gr.g.output}
    done: set[str] = set()
    records = []
    for node in list(gr.g.node):
        c = _depthwise(gr, node)
        if not c or c % multiple == 0 or node.name in done:
            continue
        group = _group(gr, node, outputs)
        if group is None:
            records.append({"depthwise": node.name, "channels": c, "padded": None, "reason": "not paddable"})
            continue
        width = -(-c // multiple) * multiple
        by_name = {n.name: n for n in gr.g.node}
        for name, roles in group.items():
            _pad_conv(gr, by_name[name], roles, width)
        gr.index()
        done.update(n for n, roles in group.items() if "dw" in roles)
        records.append({"depthwise": node.name, "channels": c, "padded": width,
                        "convs": {n: sorted(roles) for n, roles in sorted(group.items())}})
    if records:
        gr.drop_unused()
        del model.graph.value_info[:]  # shapes of the padded tensors changed
        onnx.checker.check_model(model)
    return records
