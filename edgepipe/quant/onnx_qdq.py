"""QDQ cleanup on an exported ONNX graph, so runtimes can fuse it into integer kernels.

ONNX Runtime fuses ``DQ(x), DQ(w), DQ(bias:int32) -> Conv -> Q`` into QLinearConv only when *every* input of
the Conv comes from a DequantizeLinear; OpenVINO's low-precision passes want the same shape. The exporter
gives ``float w -> Q -> DQ`` and a float bias, and pooling layers (which keep their input's quantization in
eager int8) have no Q/DQ after them. This pass, written with the onnx library because no library offers
"re-express an existing QDQ graph" (onnxruntime.quantization re-quantizes from calibration instead):

1. replaces Q(constant weight) by an int8 initializer (the exact integers the QAT model trained with);
2. re-quantizes the output of pooling/flatten ops with their input's scale and zero-point;
3. quantizes each Conv/Gemm float bias to int32 with scale = input_scale * weight_scale, behind a DQ;
4. rewrites HardSwish/HardSigmoid (no int8 kernel in ONNX Runtime) as integer Add/Mul (see below);
5. removes Identity nodes, and makes scales/zero-points scalar initializers;
6. folds a zero Pad before a Conv into the Conv's pads (TF-"SAME" models pad asymmetrically, which torch
   can only export as a Pad; ``DQ -> Pad -> Conv`` is not fused into an integer conv, ``DQ -> Conv`` is).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgepipe.quant.graph import Graph

_PASS_THROUGH = {"GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape"}


def _remove_identities(gr: Graph) -> None:
    outputs = {o.name for o in gr.g.output}
    keep = []
    for n in gr.g.node:
        if n.op_type == "Identity" and n.output[0] not in outputs:
            gr.rename_input(n.output[0], n.input[0])
            continue
        keep.append(n)
    gr.set_nodes(keep)


def _fold_pads_into_conv(gr: Graph) -> int:
    """Pad(constant 0, spatial only) -> Conv(no padding) becomes Conv with those pads (asymmetric is fine)."""
    drop, folded = set(), 0
    for n in gr.g.node:
        users = gr.consumers.get(n.output[0], []) if n.op_type == "Pad" else []
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != n.output[0]:
            continue
        conv, attrs = users[0], {a.name: a for a in n.attribute}
        if "mode" in attrs and attrs["mode"].s not in (b"constant", b""):
            continue
        pads = gr.value(n.input[1]) if len(n.input) > 1 and n.input[1] else None
        value = gr.value(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros(())
        if pads is None or value is None or np.any(value != 0) or (len(n.input) > 3 and n.input[3]):
            continue
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        conv_attrs = {a.name: a for a in conv.attribute}
        auto_pad = conv_attrs["auto_pad"].s if "auto_pad" in conv_attrs else b"NOTSET"
        if min(pads) < 0 or any(begin[:2]) or any(end[:2]) or auto_pad not in (b"NOTSET", b""):
            continue
        old = list(conv_attrs["pads"].ints) if "pads" in conv_attrs else [0] * (2 * (rank - 2))
        spatial = rank - 2
        merged = [old[i] + begin[2 + i] for i in range(spatial)] + [
            old[spatial + i] + end[2 + i] for i in range(spatial)
        ]
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend([*kept, helper.make_attribute("pads", merged)])
        conv.input[0] = n.input[0]
        drop.add(id(n))
        folded += 1
    if drop:
        gr.set_nodes([n for n in gr.g.node if id(n) not in drop])
        gr.drop_unused()
    return folded


def _fold_weight_quantize(gr: Graph) -> None:
    """Q(float constant) -> integer initializer, so weights are stored (and loaded) as int8."""
    keep = []
    for n in gr.g.node:
        weight = n.op_type == "QuantizeLinear" and gr.const(n.input[0]) is not None
        q = gr.value(n.output[0]) if weight else None
        if q is None:
            keep.append(n)
            continue
        name = gr.add_init(f"{n.input[0]}_quantized", q)
        gr.rename_input(n.output[0], name)
    gr.set_nodes(keep)


def _quantize_bias(gr: Graph) -> None:
    new_nodes: dict[int, list[onnx.NodeProto]] = defaultdict(list)
    for idx, n in enumerate(gr.g.node):
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3:
            continue
        bias = gr.const(n.input[2])
        x_dq, w_dq = gr.producer.get(n.input[0]), gr.producer.get(n.input[1])
        if bias is None or x_dq is None or w_dq is None:
            continue
        if x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue
        (sx, _, _), (sw, _, _) = gr.qparams(x_dq), gr.qparams(w_dq)
        if n.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in n.attribute):
            continue  # weights as [in, out]: per-output-channel scales sit on axis 1; not produced by us
        sb = (np.asarray(sx, np.float32).reshape(()) * np.asarray(sw, np.float32).reshape(-1)).astype(
            np.float32
        )
        sb = np.broadcast_to(sb, bias.shape).copy() if sb.size == 1 else sb
        q = np.clip(np.round(bias / sb), -(2**31), 2**31 - 1).astype(np.int32)
        # Named after the consuming node: exporters share identical float constants between layers.
        base = f"{n.name or n.output[0]}_bias"
        qname = gr.add_init(f"{base}_int32", q)
        sname = gr.add_init(f"{base}_scale", sb)
        zname = gr.add_init(f"{base}_zero_point", np.zeros_like(q))
        out = f"{base}_dequantized"
        new_nodes[idx].append(
            helper.make_node(
                "DequantizeLinear", [qname, sname, zname], [out], axis=0, name=f"{n.name or out}_bias_dq"
            )
        )
        n.input[2] = out
    gr.insert_before(new_nodes)


def _propagate_through_pools(gr: Graph) -> None:
    """Pooling keeps its input's scale in int8; give its float output that Q/DQ so the next op fuses.

    Repeated until nothing changes, so chains (GlobalAveragePool -> Flatten -> Gemm) are covered."""
    while _propagate_once(gr):
        pass


def _propagate_once(gr: Graph) -> bool:
    after: dict[int, list[onnx.NodeProto]] = defaultdict(list)
    outputs = {o.name for o in gr.g.output}
    for idx, n in enumerate(gr.g.node):
        if n.op_type not in _PASS_THROUGH:
            continue
        src = gr.producer.get(n.input[0])
        users = gr.consumers.get(n.output[0], [])
        if src is None or src.op_type != "DequantizeLinear" or n.output[0] in outputs:
            continue
        if not users or all(u.op_type == "QuantizeLinear" for u in users):
            continue
        y = n.output[0]
        q_out, dq_out = f"{y}_q", f"{y}_dq"
        qargs = list(src.input[1:3])
        after[idx + 1] += [
            helper.make_node("QuantizeLinear", [y, *qargs], [q_out], name=f"{y}_requant"),
            helper.make_node("DequantizeLinear", [q_out, *qargs], [dq_out], name=f"{y}_redequant"),
        ]
        gr.rename_input(y, dq_out)
        # rename_input also re-pointed nothing in the new nodes (not indexed yet): they read y, as intended.
    gr.insert_before(after)
    return bool(after)


def _scalar_qparams(gr: Graph) -> None:
    """Constant-node scales/zero-points -> initializers; 1-element tensors -> scalars (for QLinearAdd)."""
    for n in gr.g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k in (1, 2):
            if k >= len(n.input) or not n.input[k]:
                continue
            v = gr.const(n.input[k])
            if v is None:
                continue
            if v.size == 1 and v.ndim > 0:
                v = v.reshape(())
            if n.input[k] not in gr.inits or v.ndim != numpy_helper.to_array(gr.inits[n.input[k]]).ndim:
                n.input[k] = gr.add_init(f"{n.name or n.output[0]}_{'scale' if k == 1 else 'zero_point'}", v)
    gr.drop_unused()


def _q_after(gr: Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    users = gr.consumers.get(node.output[0], [])
    return users[0] if len(users) == 1 and users[0].op_type == "QuantizeLinear" else None


def _hard_activations_to_integer(gr: Graph) -> int:
    """DQ -> HardSwish|HardSigmoid -> Q, which ONNX Runtime runs in float (no int8 kernel), rewritten with
    ops it does run in int8:

        hardsigmoid(x) = clip((x + 3) / 6, 0, 1):  QLinearAdd(x, 3) quantized with scale 6/255, zero-point 0
                         (saturation does the clip), read back with scale 1/255 (so 255 means exactly 1.0);
        hardswish(x)   = x * hardsigmoid(x):       QLinearMul into the original output scale.

    For the squeeze-excite HardSigmoid, whose output has torch's fixed 1/256 scale, the add is quantized with
    6/256 and read back with 1/256: the same integers as the QAT model. For HardSwish the gate is rounded to
    1/255 inside (-3, 3) only, an error below |x|/510; export measures the agreement that results.
    """
    replaced = 0
    new_nodes: dict[int, list[onnx.NodeProto]] = defaultdict(list)
    drop: set[int] = set()
    for idx, n in enumerate(gr.g.node):
        if n.op_type not in ("HardSwish", "HardSigmoid"):
            continue
        src, q = gr.producer.get(n.input[0]), _q_after(gr, n)
        if src is None or src.op_type != "DequantizeLinear" or q is None:
            continue
        attrs = {a.name: a.f for a in n.attribute}
        if n.op_type == "HardSigmoid" and not (
            abs(attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and abs(attrs.get("beta", 0.5) - 0.5) < 1e-6
        ):
            continue
        q_scale, q_zp, _ = gr.qparams(q)
        levels = (
            256.0
            if (n.op_type == "HardSigmoid" and abs(float(q_scale) - 1 / 256) < 1e-9 and int(q_zp) == 0)
            else 255.0
        )
        base = n.name or n.output[0]
        three_q = gr.add_init(f"{base}_three_q", np.array(255, np.uint8))
        three_s = gr.add_init(f"{base}_three_scale", np.array(3.0 / 255, np.float32))
        zero = gr.add_init(f"{base}_zero_point_u8", np.array(0, np.uint8))
        add_s = gr.add_init(f"{base}_gate_add_scale", np.array(6.0 / levels, np.float32))
        gate_s = gr.add_init(f"{base}_gate_scale", np.array(1.0 / levels, np.float32))
        t = f"{base}_gate"
        nodes = [
            helper.make_node(
                "DequantizeLinear", [three_q, three_s, zero], [f"{t}_three"], name=f"{t}_three_dq"
            ),
            helper.make_node("Add", [n.input[0], f"{t}_three"], [f"{t}_plus3"], name=f"{t}_add"),
            helper.make_node("QuantizeLinear", [f"{t}_plus3", add_s, zero], [f"{t}_q"], name=f"{t}_q"),
            helper.make_node(
                "DequantizeLinear",
                [f"{t}_q", gate_s, zero],
                [n.output[0] if n.op_type == "HardSigmoid" else f"{t}_dq"],
                name=f"{t}_dq",
            ),
        ]
        if n.op_type == "HardSwish":
            nodes.append(helper.make_node("Mul", [n.input[0], f"{t}_dq"], [n.output[0]], name=f"{t}_mul"))
        new_nodes[idx] = nodes
        drop.add(idx)
        replaced += 1
    nodes = []
    for idx, n in enumerate(gr.g.node):
        nodes += new_nodes.get(idx, [])
        if idx not in drop:
            nodes.append(n)
    gr.set_nodes(nodes)
    return replaced


def _only_consumer(gr: Graph, name: str, op_type: str) -> onnx.NodeProto | None:
    users = gr.consumers.get(name, [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _dq_of_q(gr: Graph, name: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(Q, DQ) when ``name`` is the output of DQ(Q(t)), else None."""
    dq = gr.producer.get(name)
    q = gr.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return (q, dq) if q is not None and q.op_type == "QuantizeLinear" else None


def _gates_to_fused_hardswish(gr: Graph) -> int:
    """For OpenVINO: ``t -> Q -> DQ -> x; x * DQ(Q(HardSigmoid(x)))`` (how the QAT model's rounded HardSwish
    gate exports) becomes ``HardSwish(t)``: no FakeQuantize between a convolution and its HardSwish, so
    OpenVINO fuses the HardSwish into the int8 convolution as a post-op (NNCF places its quantizers the
    same way); the Q/DQ after the HardSwish, which quantizes the next layer's input, stays. Numerically this
    drops two roundings the QAT model trained with (the conv output's and the gate's); export measures the
    agreement.
    """
    replaced, drop = 0, set()
    for mul in gr.g.node:
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        for x, g in (mul.input, mul.input[::-1]):
            gate = _dq_of_q(gr, g)
            hs = gr.producer.get(gate[0].input[0]) if gate else None
            if hs is None or hs.op_type != "HardSigmoid" or hs.input[0] != x:
                continue
            attrs = {a.name: a.f for a in hs.attribute}
            if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
                continue
            if len(gr.consumers.get(g, [])) != 1 or len(gr.consumers.get(gate[0].output[0], [])) != 1:
                continue
            src = x
            pre = _dq_of_q(gr, x)
            if pre and {id(u) for u in gr.consumers.get(x, [])} == {id(hs), id(mul)}:
                if len(gr.consumers.get(pre[0].output[0], [])) == 1:
                    src = pre[0].input[0]
                    drop |= {id(pre[0]), id(pre[1])}
            drop |= {id(hs), id(gate[0]), id(gate[1])}
            mul.op_type = "HardSwish"
            del mul.input[:]
            mul.input.append(src)
            replaced += 1
            break
    if drop:
        gr.set_nodes([n for n in gr.g.node if id(n) not in drop])
        gr.drop_unused()
    return replaced


_SE_CHAIN = {"Conv", "Relu", "Clip", "HardSigmoid", "Sigmoid"}


def _bypass(gr: Graph, q: onnx.NodeProto, dq: onnx.NodeProto) -> None:
    """Remove a Q -> DQ pair: the DQ's consumers read the Q's float input instead."""
    gr.rename_input(dq.output[0], q.input[0])
    keep = [n for n in gr.g.node if n is not q and n is not dq]
    gr.set_nodes(keep)


def _float_squeeze_excite(gr: Graph) -> int:
    """For OpenVINO: the squeeze-excite branch (GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid, up
    to the Mul that scales the block) runs in float, as NNCF leaves it: its 1x1-spatial FCs are too small for
    int8 to pay and each Q/DQ is a separate FakeQuantize. Weights keep their trained int8 values
    (dequantized)."""
    removed = 0
    for gap in [n for n in gr.g.node if n.op_type == "GlobalAveragePool"]:
        t, seen_conv = gap.output[0], False
        while True:
            users = gr.consumers.get(t, [])
            if len(users) != 1:
                break
            u = users[0]
            if u.op_type == "QuantizeLinear":
                dq = _only_consumer(gr, u.output[0], "DequantizeLinear")
                nxt = gr.consumers.get(dq.output[0], []) if dq is not None else []
                if dq is None or len(nxt) != 1 or nxt[0].op_type not in _SE_CHAIN | {"Mul"}:
                    break
                if nxt[0].op_type == "Mul" and not seen_conv:
                    break
                _bypass(gr, u, dq)
                removed += 1
                continue
            if u.op_type not in _SE_CHAIN or (u.op_type == "Conv" and u.input[0] != t):
                break
            seen_conv |= u.op_type == "Conv"
            t = u.output[0]
    if removed:
        gr.drop_unused()
    return removed


def shape_for_openvino(model: onnx.ModelProto) -> onnx.ModelProto:
    """Re-place Q/DQ in a graph cleaned with ``integer_activations=False`` the way OpenVINO runs fastest
    (see _gates_to_fused_hardswish); returns the same (mutated) model, checked."""
    gr = Graph(model)
    _gates_to_fused_hardswish(gr)
    _float_squeeze_excite(gr)
    onnx.checker.check_model(model)
    return model


def clean_qdq(
    model: onnx.ModelProto, integer_activations: bool = True, int32_bias: bool = True
) -> onnx.ModelProto:
    """Apply the passes above in order; returns the same (mutated) model, checked.

    ``int32_bias=False`` keeps float biases (ONNX Runtime then cannot fuse QLinearConv): for diagnosis only,
    e.g. benchmarks/int8_agreement.py, which measures what int32 bias rounding does to agreement."""
    gr = Graph(model)
    _remove_identities(gr)
    _fold_pads_into_conv(gr)  # before bias quantization: that needs the Conv's input to come from a DQ
    _fold_weight_quantize(gr)
    _propagate_through_pools(gr)  # first: a conv after a pool needs its input DQ to get an int32 bias
    if int32_bias:
        _quantize_bias(gr)
    if integer_activations:
        _hard_activations_to_integer(gr)
    _scalar_qparams(gr)
    onnx.checker.check_model(model)
    return model
