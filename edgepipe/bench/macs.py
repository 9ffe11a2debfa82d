"""Count multiply-accumulates (MACs) from the ONNX graph, so FP32 and INT8 twins are compared on equal terms.

Why the graph and not thop on the torch model: thop only hooks float ``nn.Conv2d``/``nn.Linear`` modules.
On a converted INT8 torch model (``torch.ao`` quantized modules) those hooks never fire and it counts almost
nothing; a published report claimed 0.003 GFLOPs and a "140x efficiency gain" that way. In the ONNX graph
every Conv/Gemm/MatMul is in plain sight, quantized (QLinear*/Integer ops, QDQ) or not, so we count there
and keep thop only as a cross-check on float models.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edgepipe.errors import BenchInputError

log = logging.getLogger(__name__)

Shape = list[int | None]


@dataclass(frozen=True)
class _Spec:
    """Input slots of a compute op, so quantized forms are counted exactly like their float twins."""

    kind: str  # conv | convT | gemm | matmul
    x: int
    w: int
    bias: tuple[int, ...]
    integer: bool  # integer arithmetic by definition (QLinear*/Integer ops)


_COMPUTE: dict[str, _Spec] = {
    "Conv": _Spec("conv", 0, 1, (2,), False),
    "FusedConv": _Spec("conv", 0, 1, (2,), False),
    "ConvTranspose": _Spec("convT", 0, 1, (2,), False),
    "Gemm": _Spec("gemm", 0, 1, (2,), False),
    "FusedGemm": _Spec("gemm", 0, 1, (2,), False),
    "MatMul": _Spec("matmul", 0, 1, (), False),
    "FusedMatMul": _Spec("matmul", 0, 1, (), False),
    "QLinearConv": _Spec("conv", 0, 3, (8,), True),
    "ConvInteger": _Spec("conv", 0, 1, (), True),
    "QLinearMatMul": _Spec("matmul", 0, 3, (), True),
    "MatMulInteger": _Spec("matmul", 0, 1, (), True),
    "MatMulIntegerToFloat": _Spec("matmul", 0, 1, (6,), True),
    "DynamicQuantizeMatMul": _Spec("matmul", 0, 1, (4,), True),
    "QGemm": _Spec("gemm", 0, 3, (6,), True),
}
_DOMAINS = {"", "ai.onnx", "com.microsoft"}
_MOVES = {"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}  # data movement only
_INT8 = {TensorProto.INT8, TensorProto.UINT8}
# Output zero-point input of com.microsoft QLinear ops: it fixes their output dtype.
_Y_ZP = {
    "QLinearAdd": 7,
    "QLinearMul": 7,
    "QLinearConv": 7,
    "QLinearMatMul": 7,
    "QGemm": 8,
    "QLinearGlobalAveragePool": 4,
    "QLinearAveragePool": 4,
    "QLinearLeakyRelu": 4,
    "QLinearSigmoid": 4,
    "QLinearSoftmax": 4,
    "QLinearConcat": 1,
}
# Never evaluated as constants: they turn weights into floats, and int8 detection needs them in the graph.
_NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Constant"}
_MAX_ROUNDS = 16
_KEEP_VALUES_UP_TO = 1024  # elements; bigger initializers are weights, not shape tensors


def count_macs(model: str | Path | onnx.ModelProto, batch: int = 1) -> dict[str, Any]:
    """MACs, params and INT8 share of an ONNX model for a batch-``batch`` input, counted from the graph.

    Quantized forms (QLinear*, *Integer, QDQ) count exactly like their FP32 twin, and ``params`` counts each
    stored weight/bias tensor once (never scales or zero-points), so twins agree on both. Zero channels that
    export added for a runtime's kernels (metadata ``padded_channels``, quant/pad_channels.py) are layout,
    like oneDNN's blocked formats, not model compute: they are left out of both counts.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BenchInputError(f"batch must be a positive int, got {batch!r}; fix: pass batch=1 or larger")
    proto = _load(model)
    _fix_batch(proto, batch)
    # Shapes come from a copy whose constant integer chains are folded; nodes are counted on the graph as is.
    _, shapes, types = _infer(_fold_integer_constants(proto))
    graph = proto.graph
    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in subgraph for n in graph.node for a in n.attribute):
        log.warning("model has control-flow subgraphs (If/Loop/Scan); MACs inside them are not counted")
    producers = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input):
            consumers.setdefault(name, []).append(node)
    sizes = _tensor_sizes(graph)
    padded = _padding(proto)

    by_op: Counter[str] = Counter()
    by_node: dict[str, int] = {}
    other: Counter[str] = Counter()
    int8_macs = 0
    params: dict[str, int] = {}
    for node in graph.node:
        spec = _COMPUTE.get(node.op_type) if node.domain in _DOMAINS else None
        if spec is None:
            other[node.op_type] += 1
            continue
        macs = _node_macs(node, spec, shapes)
        if macs is None:
            raise BenchInputError(
                f"cannot size {node.op_type} node '{node.name or node.output[0]}': shapes unknown after "
                "shape inference; fix: run onnxruntime.quantization.quant_pre_process on the model first"
            )
        pad = padded.get(node.name)
        if pad is not None:
            macs = macs * pad.weight[0] // pad.weight[1]
        by_op[node.op_type] += macs
        by_node[node.name or node.output[0]] = macs
        ins = list(node.input)
        if spec.integer or (
            _from_int8_dq(ins[spec.x], producers, types) and _from_int8_dq(ins[spec.w], producers, types)
        ):
            int8_macs += macs
        inputs = [ins[i] for i in (spec.x, spec.w, *spec.bias) if i < len(ins) and ins[i]]
        if spec.integer and not spec.bias:
            inputs += _trailing_bias(node, consumers, producers, sizes)
        for k, name in enumerate(inputs):
            source = _weight_source(name, producers, sizes)
            if source is not None:
                num, den = (1, 1) if pad is None or k == 0 else (pad.weight if k == 1 else pad.bias)
                params[source] = sizes[source] * num // den

    total = sum(by_op.values())
    return {
        "macs": total,
        "gmacs": total / 1e9,
        "gflops": 2 * total / 1e9,
        "params": sum(params.values()),
        "by_op_type": dict(by_op),
        "by_node": by_node,
        "int8_macs": int8_macs,
        "int8_mac_share": int8_macs / total if total else 0.0,
        "nodes": len(graph.node),
        "batch": batch,
        "other_ops": dict(other),
    }


@dataclass(frozen=True)
class _Pad:
    weight: tuple[int, int]  # the conv's weight (and MACs) shrink by this fraction
    bias: tuple[int, int]  # its bias by this one


def _padding(proto: onnx.ModelProto) -> dict[str, _Pad]:
    """Per conv export padded (``padded_channels`` metadata): the fractions that are model, not padding."""
    entry = next((p.value for p in proto.metadata_props if p.key == "padded_channels"), None)
    out: dict[str, _Pad] = {}
    for rec in json.loads(entry) if entry else []:
        c, width = rec.get("channels"), rec.get("padded")
        if not width:
            continue
        for name, roles in rec.get("convs", {}).items():
            dims = len(set(roles) & {"in", "out"}) + ("dw" in roles)
            bias = (c, width) if set(roles) & {"in", "dw"} else (1, 1)
            out[name] = _Pad((c**dims, width**dims), bias)
    return out


def thop_macs(torch_model: Any, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """thop's MAC count of a float torch model: a cross-check only (it sees nothing in INT8 torch models)."""
    import thop
    import torch

    if not input_size or not all(isinstance(d, int) and d > 0 for d in input_size):
        raise BenchInputError(
            f"input_size must be positive ints, got {input_size!r}; fix: pass e.g. (1, 3, 224, 224)"
        )
    model = copy.deepcopy(torch_model).eval()  # thop registers total_ops/total_params buffers on every module
    first = next(model.parameters(), None)
    x = torch.zeros(*input_size, device=first.device if first is not None else "cpu")
    with torch.no_grad():
        macs, _ = thop.profile(model, inputs=(x,), verbose=False)
    return int(macs)


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """A private copy of the model (we rewrite its shapes), without weight data: only dims are needed."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    elif isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise BenchInputError(f"ONNX model '{path}' does not exist; fix: pass the path of an .onnx file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise BenchInputError(
                f"'{path}' is not a readable ONNX model ({type(exc).__name__}); fix: pass an .onnx file"
            ) from exc
    else:
        raise BenchInputError(
            f"count_macs needs a path or onnx.ModelProto, got {type(model).__name__}; fix: export to ONNX"
        )
    if not proto.graph.node:
        raise BenchInputError("the ONNX model has no graph nodes; fix: pass an exported .onnx model file")
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    _drop_weight_data(proto.graph)
    return proto


def _drop_weight_data(graph: onnx.GraphProto) -> None:
    """Only dims matter here; dropping big tensors' bytes makes shape inference ~100x faster on ResNet-18.

    Small tensors keep their values: shape inference's data propagation needs Reshape targets and the like.
    """
    for init in graph.initializer:
        if math.prod(init.dims) > _KEEP_VALUES_UP_TO:
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                init.ClearField(field)


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of initializers that still hold data (see _drop_weight_data) and of Constant nodes."""
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        external = init.data_location == TensorProto.EXTERNAL
        if not external and math.prod(init.dims) <= _KEEP_VALUES_UP_TO:
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.output and value is not None:
            if math.prod(value.dims) <= _KEEP_VALUES_UP_TO:
                values[node.output[0]] = numpy_helper.to_array(value)
    return values


def _fold_integer_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which integer tensors computed from constants alone are initializers.

    Why: ONNX shape inference propagates values only through Shape/Gather/Concat/Slice/arithmetic, not
    through the ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Cast chain the TorchScript
    exporter writes for ``F.pad`` (TF-"SAME" padding in EfficientNet-Lite, for one). A Pad fed by such a
    chain has no output shape, and then neither has anything after it. Only small integer results are kept
    (pads, shapes, axes): weights and their DequantizeLinear stay, so int8 detection and params are unchanged.
    """
    values = _constant_values(proto.graph)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    graph_outputs = {o.name for o in proto.graph.output}
    folded: dict[str, np.ndarray] = {}
    dropped: set[int] = set()
    for i, node in enumerate(proto.graph.node):
        ins = [n for n in node.input if n]
        if (
            node.op_type in _NEVER_FOLD
            or node.domain not in ("", "ai.onnx")
            or not ins
            or any(n not in values for n in ins)
            or any(o in graph_outputs for o in node.output)
            or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        ):
            continue
        try:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(node, opsets={"": opset} if opset else None)
            outs = evaluator.run(None, {n: values[n] for n in ins})
        except Exception:  # noqa: BLE001 - an op the reference runtime cannot evaluate stays a node
            continue
        outs = [np.asarray(v) for v in outs]
        if not all(v.dtype.kind in "iu" and v.size <= _KEEP_VALUES_UP_TO for v in outs):
            continue
        for name, v in zip(node.output, outs, strict=False):
            if name:
                values[name] = folded[name] = v
        dropped.add(i)
    if not folded:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    keep = [n for i, n in enumerate(out.graph.node) if i not in dropped]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items())
    return out


def _fix_batch(proto: onnx.ModelProto, batch: int) -> None:
    """Pin dim 0 of every input to ``batch``; other dims must already be concrete or MACs are ill-defined."""
    inits = {i.name for i in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        tensor_type = inp.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise BenchInputError(f"input '{inp.name}' has no shape; fix: export with a fixed input shape")
        for i, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                if i == 0 and dim.dim_value != batch:
                    raise BenchInputError(
                        f"input '{inp.name}' has a fixed batch of {dim.dim_value}, not {batch}; fix: pass "
                        f"batch={dim.dim_value} or export with a dynamic batch axis"
                    )
            elif i == 0:
                dim.Clear()
                dim.dim_value = batch
            else:
                raise BenchInputError(
                    f"input '{inp.name}' has symbolic dim {i} ('{dim.dim_param or '?'}'); fix: export with a "
                    "fixed image size, only the batch dim may be dynamic"
                )
    # Quantizers copy the FP32 model's value_info (symbolic batch, tensors that no longer exist): drop it.
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()


def _infer(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Shape], dict[str, int]]:
    """ONNX shape inference plus our rules for ops it skips (com.microsoft QLinear*), run to a fixpoint."""
    for _ in range(_MAX_ROUNDS):
        try:
            proto = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception as exc:  # malformed graphs raise even with strict_mode off
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise BenchInputError(
                f"ONNX shape inference failed: {first}; fix: check the model with onnx.checker"
            ) from exc
        shapes, types = _collect(proto.graph)
        added = []
        for node in proto.graph.node:
            out = node.output[0] if node.output else ""
            if not out or _known(shapes.get(out)):
                continue
            shape = _rule_shape(node, shapes)
            if shape is not None and _known(shape):
                shapes[out] = shape
                added.append(helper.make_tensor_value_info(out, _out_type(node, types), shape))
        if not added:
            return proto, shapes, types
        proto.graph.value_info.extend(added)
    return proto, shapes, types


def _collect(graph: onnx.GraphProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Known shapes (None for unknown dims) and element types of every named tensor."""
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        tensor_type = vi.type.tensor_type
        if tensor_type.elem_type:
            types[vi.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                shapes[node.output[0]] = list(value.dims)
                types[node.output[0]] = value.data_type
    return shapes, types


def _tensor_sizes(graph: onnx.GraphProto) -> dict[str, int]:
    """Element counts of initializers and Constant outputs: the candidates for 'params'."""
    sizes = {i.name: math.prod(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            sizes[node.output[0]] = math.prod(value.dims) if value is not None else 1
    return sizes


def _weight_source(name: str, producers: dict[str, onnx.NodeProto], sizes: dict[str, int]) -> str | None:
    """The initializer behind a weight/bias input, seen through DequantizeLinear, Cast and data movement."""
    while name not in sizes:
        node = producers.get(name)
        if node is None or not node.input or node.op_type not in _MOVES | {"DequantizeLinear", "Cast"}:
            return None
        name = node.input[0]  # DequantizeLinear input 0 is the quantized tensor, never scale/zero-point
    return name


def _trailing_bias(
    node: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    producers: dict[str, onnx.NodeProto],
    sizes: dict[str, int],
) -> list[str]:
    """The bias of a ConvInteger/MatMulInteger: ORT's dynamic quantizer moves it to an Add after Cast/Mul."""
    name = node.output[0]
    for _ in range(4):
        users = consumers.get(name, [])
        if len(users) != 1:
            return []
        user = users[0]
        if user.op_type == "Add":
            return [n for n in user.input if n != name and _weight_source(n, producers, sizes) is not None]
        if user.op_type not in ("Cast", "Mul") or not user.output:
            return []
        name = user.output[0]
    return []


def _from_int8_dq(name: str, producers: dict[str, onnx.NodeProto], types: dict[str, int]) -> bool:
    """True when a tensor is an 8-bit tensor dequantized for a float op (the QDQ pattern)."""
    node = producers.get(name)
    while node is not None and node.op_type in _MOVES and node.input:
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear" and types.get(node.input[0]) in _INT8


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _known(shape: Shape | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _prod(dims: Sequence[int | None]) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)  # type: ignore[arg-type]


def _input_shape(node: onnx.NodeProto, idx: int, shapes: dict[str, Shape]) -> Shape | None:
    return shapes.get(node.input[idx]) if idx < len(node.input) and node.input[idx] else None


def _node_macs(node: onnx.NodeProto, spec: _Spec, shapes: dict[str, Shape]) -> int | None:
    """MACs of one compute node (bias adds are not MACs), or None if its shapes are unknown."""
    x, w = _input_shape(node, spec.x, shapes), _input_shape(node, spec.w, shapes)
    if x is None or w is None:
        return None
    a = _attrs(node)
    if spec.kind == "conv":  # W is [Cout, Cin/group, *k]: every output element costs Cin/group * prod(k)
        out = shapes.get(node.output[0])
        out = out if _known(out) else _conv_out(x, w, a)
        return None if out is None else _prod([*out, *w[1:]])
    if spec.kind == "convT":  # W is [Cin, Cout/group, *k]: every input element is scattered into that much
        return _prod([*x, *w[1:]])
    if spec.kind == "gemm":
        if len(x) != 2 or len(w) != 2:
            return None
        m, k = (x[1], x[0]) if a.get("transA") else (x[0], x[1])
        n = w[0] if a.get("transB") else w[1]
        return _prod([m, k, n])
    dims = _matmul_dims(x, w, a)
    return None if dims is None else _prod([*dims[0], *dims[1:4]])


def _matmul_dims(a: Shape, b: Shape, attrs: dict[str, Any]) -> tuple[Shape, Any, Any, Any, Shape] | None:
    """(batch dims, M, K, N, output shape) of numpy-style MatMul, incl. FusedMatMul's transA/transB."""
    if not a or not b:
        return None
    a_vec, b_vec = len(a) == 1, len(b) == 1
    a = [1, a[0]] if a_vec else list(a)
    b = [b[0], 1] if b_vec else list(b)
    if attrs.get("transA"):
        a[-2], a[-1] = a[-1], a[-2]
    if attrs.get("transB"):
        b[-2], b[-1] = b[-1], b[-2]
    batch = _broadcast(a[:-2], b[:-2])
    if batch is None:
        return None
    m, k, n = a[-2], a[-1], b[-1]
    return batch, m, k, n, [*batch, *([] if a_vec else [m]), *([] if b_vec else [n])]


def _broadcast(a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or b is None:
        return None
    a, b = [1] * (len(b) - len(a)) + list(a), [1] * (len(a) - len(b)) + list(b)
    return [y if x == 1 else x if y == 1 else (x if x == y else None) for x, y in zip(a, b, strict=True)]


def _window(size: int | None, k: int | None, s: int, d: int, pads: int, auto: str, ceil: bool) -> int | None:
    """Output length of a conv/pool window along one axis (ONNX formula)."""
    if size is None or k is None:
        return None
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // s)
    span = size + (0 if auto == "VALID" else pads) - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1


def _conv_out(x: Shape, w: Shape | None, a: dict[str, Any], channels: int | None = None) -> Shape | None:
    """Conv (or pool, with ``w`` None) output shape, for when ONNX inference could not give it."""
    if len(x) < 3:
        return None
    last = bool(a.get("channels_last"))
    if last:
        x = [x[0], x[-1], *x[1:-1]]
    nsp = len(x) - 2
    kernel = a.get("kernel_shape") or (w[2:] if w is not None else None)
    if kernel is None or len(kernel) != nsp:
        return None
    strides, dil = a.get("strides") or [1] * nsp, a.get("dilations") or [1] * nsp
    pads = a.get("pads") or [0] * (2 * nsp)
    auto, ceil = a.get("auto_pad", "NOTSET"), bool(a.get("ceil_mode"))
    spatial = [
        _window(x[2 + i], kernel[i], strides[i], dil[i], pads[i] + pads[i + nsp], auto, ceil)
        for i in range(nsp)
    ]
    c = channels if w is None else w[0]
    return [x[0], *spatial, c] if last else [x[0], c, *spatial]


def _rule_shape(node: onnx.NodeProto, shapes: dict[str, Shape]) -> Shape | None:
    """Output shape for ops ONNX inference skips (mostly com.microsoft QLinear* from ORT's quantizer)."""
    op, a = node.op_type, _attrs(node)
    x = _input_shape(node, 0, shapes)
    spec = _COMPUTE.get(op)
    if spec is not None:
        w = _input_shape(node, spec.w, shapes)
        if x is None or w is None:
            return None
        if spec.kind == "conv":
            return _conv_out(x, w, a)
        if spec.kind == "gemm":
            if len(x) != 2 or len(w) != 2:
                return None
            return [x[1] if a.get("transA") else x[0], w[0] if a.get("transB") else w[1]]
        if spec.kind == "matmul":
            dims = _matmul_dims(x, w, a)
            return None if dims is None else dims[4]
        return None  # ConvTranspose: ONNX infers it; a wrong guess here would be worse than none
    if op in ("QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax"):
        return x
    if op in ("QLinearAdd", "QLinearMul"):
        return _broadcast(x, _input_shape(node, 3, shapes))
    if op == "QLinearGlobalAveragePool" and x is not None and len(x) >= 3:
        ones = [1] * (len(x) - 2)
        return [x[0], *ones, x[-1]] if a.get("channels_last") else [x[0], x[1], *ones]
    if op == "QLinearAveragePool" and x is not None:
        return _conv_out(x, None, a, channels=x[-1] if a.get("channels_last") else x[1])
    if op == "QLinearConcat":
        parts = [_input_shape(node, i, shapes) for i in range(2, len(node.input), 3)]
        if not parts or any(p is None for p in parts) or len({len(p) for p in parts}) != 1:  # type: ignore[arg-type]
            return None
        axis = a.get("axis", 0) % len(parts[0])  # type: ignore[arg-type]
        along = [p[axis] for p in parts]  # type: ignore[index]
        total = None if None in along else sum(along)  # type: ignore[arg-type]
        return [total if i == axis else d for i, d in enumerate(parts[0])]  # type: ignore[arg-type]
    return None


def _out_type(node: onnx.NodeProto, types: dict[str, int]) -> int:
    """Element type for a value_info we add: the output zero-point's type for QLinear ops, else a guess."""
    idx = _Y_ZP.get(node.op_type)
    if idx is not None and idx < len(node.input) and node.input[idx]:
        return types.get(node.input[idx], TensorProto.UINT8)
    if node.op_type in ("ConvInteger", "MatMulInteger"):
        return TensorProto.INT32
    if node.op_type in ("QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        return TensorProto.FLOAT
    return types.get(node.input[0], TensorProto.FLOAT) if node.input else TensorProto.FLOAT
