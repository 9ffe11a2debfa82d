"""ONNX Runtime time by op class (first conv, depthwise, 1x1/kxk conv, classifier, multiplies, adds, other),
with the MACs each class does and its GMAC/s: how far each class is from the compute bound. The FP32 and the
INT8 graph of one model do the same MACs per class, so their rows compare kernel for kernel.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# ops ORT runs outside the convolutions, by what they compute in a MobileNet-style block
_ELEMENTWISE = {
    "QLinearMul": "HardSwish/SE multiply",
    "Mul": "HardSwish/SE multiply",
    "HardSigmoid": "HardSwish/SE multiply",
    "QLinearAdd": "adds (residual + HardSwish gate)",
    "Add": "adds (residual + HardSwish gate)",
}
OTHER = "other (pool, layout, Q/DQ)"
_FUSED_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
_ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")  # names ORT gives the nodes it splits or re-lays out
_OUTPUT_SUFFIX = re.compile(r"_output_0$")


def _conv_kind(group: int, weight_dims: list[int] | None) -> str:
    if group > 1:
        return "depthwise conv"
    if weight_dims is not None and len(weight_dims) == 4 and weight_dims[1] == 3:
        return "first conv"
    return "conv 1x1/kxk"


def conv_nodes(graph) -> dict[str, str]:
    """The Conv or Gemm node behind every name ORT may give it: its node name, its outputs, and the outputs of
    an activation that consumes it (ORT fuses Conv+Relu/Clip/... into one node named after the activation)."""
    out: dict[str, str] = {}
    for n in graph.node:
        if n.op_type in ("Conv", "Gemm"):
            for key in (n.name, *n.output):
                out[key] = n.name
        elif n.op_type in _FUSED_ACTIVATIONS and n.input and n.input[0] in out:
            for key in (n.name, *n.output):
                out[key] = out[n.input[0]]
    return out


def conv_classes(graph) -> dict[str, str]:
    """Op class of every Conv and Gemm, keyed as conv_nodes. In a QDQ graph a weight sits behind a
    DequantizeLinear: the class then reads the dequantized initializer's shape."""
    inits = {i.name: i for i in graph.initializer}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    kinds: dict[str, str] = {}
    for n in graph.node:
        if n.op_type == "Gemm":
            kinds[n.name] = "classifier (Gemm)"
        elif n.op_type == "Conv":
            w = inits.get(n.input[1])
            if w is None and n.input[1] in dq:
                w = inits.get(dq[n.input[1]].input[0])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kinds[n.name] = _conv_kind(group, list(w.dims) if w is not None else None)
    return {key: kinds[node] for key, node in conv_nodes(graph).items()}


def _lookup(table: dict[str, Any], name: str) -> Any:
    base = _ORT_SUFFIX.sub("", name)
    return table.get(base) or table.get(_OUTPUT_SUFFIX.sub("", base))


def ort_op_classes(path: Path, threads: int, sample: np.ndarray, runs: int = 30) -> dict[str, Any]:
    """``classes``: per op class its time (ms, the sum of its nodes' median kernel times), node count, GMACs
    and GMAC/s; ``nodes``: every executed node's op type and median ms (the per-layer profile)."""
    import onnx

    from edgepipe.bench.macs import count_macs
    from edgepipe.runtimes.onnxruntime import node_profile

    graph = onnx.load(str(path)).graph
    klass, node_of = conv_classes(graph), conv_nodes(graph)
    macs = count_macs(path)["by_node"]
    nodes = node_profile(path, threads, sample, runs)
    classes: dict[str, dict[str, Any]] = defaultdict(lambda: {"ms": 0.0, "gmacs": 0.0, "nodes": 0})
    for name, node in nodes.items():
        row = classes[_lookup(klass, name) or _ELEMENTWISE.get(node["op"], OTHER)]
        row["ms"] += node["ms"]
        row["nodes"] += 1
        row["gmacs"] += (macs.get(_lookup(node_of, name) or name) or _lookup(macs, name) or 0) / 1e9
    for row in classes.values():
        row["gmac_per_s"] = row["gmacs"] / (row["ms"] / 1e3) if row["ms"] and row["gmacs"] else None
    shown = {name: {"op": n["op"], "ms": round(n["ms"], 4)} for name, n in nodes.items()}
    return {"classes": dict(classes), "nodes": shown}
