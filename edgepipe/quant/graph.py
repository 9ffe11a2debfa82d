"""One small indexed view of an ONNX graph that every QDQ rewrite in quant/ edits (onnx_qdq, pad_channels,
mixed, u8u8): producers and consumers per tensor, initializers by name, and the one constant folding.

Why not onnxscript's rewriter: its IR rebuilds the model, and these passes patch a ModelProto in place node by
node (pads, Q/DQ placement, initializer padding); an index over the proto is all they share."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from edgepipe.errors import ModelError

_MAX_DEPTH = 32  # constant subgraphs the exporter leaves are short (Pad's pads: Concat/Slice/Cast chains)


class Graph:
    """``model``'s graph with ``producer`` (tensor -> node), ``consumers`` (tensor -> nodes) and ``inits``
    (name -> initializer). A pass that edits nodes calls ``set_nodes`` or ``index`` to refresh them."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.g = model, model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.index()

    def index(self) -> None:
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self._values: dict[str, np.ndarray | None] = {}

    @property
    def outputs(self) -> set[str]:
        return {o.name for o in self.g.output}

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is stored as one: an initializer, a Constant (or Identity of one)."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type == "Identity":
            return self.const(node.input[0])
        return None

    def value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is computed from constants only, else None: the one constant folding
        (ONNX's reference evaluator, node by node, memoized until the next ``index``). It folds what the
        exporter's folding leaves (pads from Concat/Slice/Cast) and DequantizeLinear(integer weights)."""
        return self._value(name, 0)

    def _value(self, name: str, depth: int) -> np.ndarray | None:
        if name in self._values:
            return self._values[name]
        value = self.const(name)
        node = self.producer.get(name)
        if value is None and node is not None and depth <= _MAX_DEPTH:
            inputs = {i: self._value(i, depth + 1) for i in node.input if i}
            if all(v is not None for v in inputs.values()):
                from onnx.reference import ReferenceEvaluator

                value = ReferenceEvaluator(node).run(None, inputs)[list(node.output).index(name)]
        self._values[name] = value
        return value

    def qparams(self, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int]:
        """(scale, zero point, axis) of a QuantizeLinear/DequantizeLinear; zero point uint8 0 when absent."""
        scale = self.const(node.input[1])
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.array(0, np.uint8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return scale, zp, axis

    def add_init(self, name: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer under ``name`` (suffixed until unique); returns the name used."""
        base, k = name, 0
        while name in self.inits or name in self.producer:
            k += 1
            name = f"{base}_{k}"
        t = numpy_helper.from_array(value, name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name

    def set_nodes(self, nodes: list[onnx.NodeProto]) -> None:
        """The graph's nodes become ``nodes`` (in order), producers and consumers re-indexed."""
        del self.g.node[:]
        self.g.node.extend(nodes)
        self.index()

    def insert_before(self, new_nodes: dict[int, list[onnx.NodeProto]]) -> None:
        """Insert ``new_nodes[i]`` before the node now at position i."""
        nodes = []
        for idx, n in enumerate(self.g.node):
            nodes += new_nodes.get(idx, [])
            nodes.append(n)
        self.set_nodes(nodes)

    def rename_input(self, old: str, new: str) -> None:
        """Every consumer of ``old`` reads ``new`` instead (graph outputs keep their names)."""
        for n in list(self.consumers.get(old, [])):
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new
        if old in self.outputs:  # keep graph output names stable: re-point the producer instead
            raise ModelError(
                f"a QDQ rewrite tried to rename the graph output {old}; this is a bug in edgepipe "
                "(quant/); fix: export with export_onnx(..., qdq=False) meanwhile"
            )

    def drop_unused(self) -> None:
        """Remove nodes nothing reads (Constants, what a fold left unused) and initializers no node reads."""
        self.index()
        outputs = self.outputs
        changed = True
        while changed:
            changed = False
            keep = []
            for n in self.g.node:
                if not any(self.consumers.get(o) for o in n.output) and not (set(n.output) & outputs):
                    changed = True
                    continue
                keep.append(n)
            self.set_nodes(keep)
        used = {i for n in self.g.node for i in n.input} | outputs
        live = [i for i in self.g.initializer if i.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(live)
        self.inits = {i.name: i for i in self.g.initializer}
