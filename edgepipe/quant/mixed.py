"""Mixed precision by measurement: which convolutions of an INT8 QDQ graph ONNX Runtime runs faster in float.

ONNX Runtime (MLAS) has no fast int8 kernel for some layers: its symmetric int8 depthwise kernel needs a
channel count divisible by 16 (MobileNetV3-Large's 72, 120, 184 and 200 are not), and tiny squeeze-excite
convolutions gain nothing. Here each convolution is timed alone, as it sits in the graph (uint8 in, uint8
out), once as the QDQ layer ORT fuses into QLinearConv and once as a float convolution between the same
DequantizeLinear and QuantizeLinear (its weights dequantized: the trained int8 values, so the function is
unchanged up to the accumulator's rounding), on the CPU at hand; the layers where float wins are the ones
``float_layers`` keeps in float. The choice and its profile go in the export manifest; a recipe can pin it.

ONNX Runtime (1.2x) quantizes the float weights of a ``DQ -> Conv -> Q`` node itself (its
WeightBiasQuantization optimizer, per-tensor, onto the slow generic kernel: measured no faster than int8), so
a float layer stays float only with that optimizer disabled: the model records ``ORT_DISABLED_OPTIMIZERS``
in its metadata, which our ONNX Runtime loader honours; a plain InferenceSession still runs it (as int8).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgepipe.quant.graph import Graph

log = logging.getLogger(__name__)
ORT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
METADATA_KEY = "ort_disabled_optimizers"  # metadata_props entry our ORT loader reads


def _dq_const(gr: Graph, name: str) -> np.ndarray | None:
    """The float value of DequantizeLinear(constant) feeding ``name``, else None."""
    dq = gr.producer.get(name)
    return gr.value(name) if dq is not None and dq.op_type == "DequantizeLinear" else None


def quantized_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes whose weights come from a DequantizeLinear (the ones ORT can run in int8)."""
    gr = Graph(model)
    return [n.name for n in gr.g.node if n.op_type == "Conv" and _dq_const(gr, n.input[1]) is not None]


def apply_float_layers(model: onnx.ModelProto, names: list[str] | tuple[str, ...]) -> list[str]:
    """Give the named Conv nodes float weights and bias (dequantized from their int8/int32 values), so ONNX
    Runtime runs them as float convolutions between the graph's Q/DQ; returns the names it changed. An
    unknown name is an error: a pinned layer list must match the model it is applied to."""
    gr = Graph(model)
    by_name = {n.name: n for n in gr.g.node if n.op_type == "Conv"}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"no Conv node named {unknown[0]!r}")
    changed = []
    for name in names:
        conv = by_name[name]
        for k in (1, 2):
            if k < len(conv.input) and conv.input[k]:
                value = _dq_const(gr, conv.input[k])
                if value is not None:
                    conv.input[k] = gr.add_init(f"{name}_float_{'weight' if k == 1 else 'bias'}", value)
                    if k == 1:
                        changed.append(name)
        gr.index()
    gr.drop_unused()
    onnx.checker.check_model(model)
    return changed


def _layer_model(model: onnx.ModelProto, conv: onnx.NodeProto, work: Path, shapes: dict) -> Path | None:
    """The conv alone as it sits in the graph: DQ(x) -> Conv [-> Relu] -> Q, uint8 in and out."""
    gr = Graph(model)
    dq_in = gr.producer.get(conv.input[0])
    users = gr.consumers.get(conv.output[0], [])
    if len(users) == 1 and users[0].op_type == "Relu":
        users = gr.consumers.get(users[0].output[0], [])
    if dq_in is None or dq_in.op_type != "DequantizeLinear" or len(users) != 1:
        return None
    if users[0].op_type != "QuantizeLinear" or dq_in.input[0] not in shapes:
        return None
    src, out = work / "model.onnx", work / f"{conv.name.strip('/').replace('/', '_')}.onnx"
    if not src.exists():
        onnx.save(model, str(src))
    onnx.utils.extract_model(str(src), str(out), [dq_in.input[0]], [users[0].output[0]], check_model=False)
    return out


class _Layer:
    """One extracted layer as a runtime the timing rounds call (uint8 in, uint8 out), with ORT's weight
    re-quantization off so a float layer runs in float."""

    def __init__(self, path: Path, input_name: str, threads: int) -> None:
        from edgepipe.runtimes.onnxruntime import make_session

        self.session = make_session(path, threads, disabled=ORT_DISABLED_OPTIMIZERS, log_severity_level=3)
        self.input_name = input_name

    def predict(self, x: np.ndarray) -> Any:
        return self.session.run(None, {self.input_name: x})


def profile_layers(
    int8_onnx: Path, input_size: list[int], threads: int = 2, rounds: int = 7, iters: int = 30
) -> dict[str, dict[str, Any]]:
    """Per quantized conv: median ms as int8 (QLinearConv) and as float, timed alone in alternating rounds
    (the per-round medians' minimum: other load only ever adds time), with its channel count and group."""
    from edgepipe.bench.harness import alternating_rounds, round_medians

    model = onnx.load(str(int8_onnx))
    fixed = onnx.shape_inference.infer_shapes(_with_batch_one(model, input_size))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*fixed.graph.value_info, *fixed.graph.input)
    }
    names = set(quantized_convs(fixed))  # once: it folds every weight's DequantizeLinear
    producer = {o: n for n in fixed.graph.node for o in n.output}
    weights = {i.name: i for i in fixed.graph.initializer}
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-layers-") as tmp:
        work = Path(tmp)
        for conv in [n for n in fixed.graph.node if n.name in names]:
            int8_path = _layer_model(fixed, conv, work, shapes)
            if int8_path is None:
                continue
            layer = onnx.load(str(int8_path))
            apply_float_layers(layer, [conv.name])
            float_path = int8_path.with_name(int8_path.stem + "_float.onnx")
            onnx.save(layer, str(float_path))
            name_in = layer.graph.input[0].name
            x = np.random.default_rng(0).integers(0, 256, shapes[name_in], dtype=np.uint8)
            layers = {k: _Layer(p, name_in, threads) for k, p in (("int8", int8_path), ("float", float_path))}
            calls = alternating_rounds(layers, x, rounds, iters, warmup=1)
            medians = {k: round_medians(c) for k, c in calls.items()}
            w = weights[producer[conv.input[1]].input[0]]  # the int8 weight its DequantizeLinear reads
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            out[conv.name] = {
                "int8_ms": round(min(medians["int8"]), 5),
                "float_ms": round(min(medians["float"]), 5),
                "out_channels": int(w.dims[0]),
                "group": int(group),
            }
    return out


def _with_batch_one(model: onnx.ModelProto, input_size: list[int]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, [1, *input_size], strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    return m


def choose_float_layers(profile: dict[str, dict[str, Any]], margin: float = 0.9) -> list[str]:
    """Layers whose float time is below ``margin`` x their int8 time (a clear win, not noise)."""
    return [name for name, p in profile.items() if p["float_ms"] < margin * p["int8_ms"]]


def write_float_layers(src: Path, dst: Path, names: list[str] | tuple[str, ...]) -> list[str]:
    """``src`` with the named convolutions in float (apply_float_layers), saved as ``dst``; when any are, the
    metadata asks our ORT loader to keep ORT_DISABLED_OPTIMIZERS off. Returns the layers changed."""
    import json

    proto = onnx.load(str(src))
    if names:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(list(ORT_DISABLED_OPTIMIZERS))
    changed = apply_float_layers(proto, names)
    onnx.save(proto, str(dst))
    return changed
