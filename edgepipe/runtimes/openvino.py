"""OpenVINO backend with precision chosen explicitly, plus an op account of what really ran in INT8.

On CPUs with native bf16 (AVX512_BF16 / AMX) OpenVINO silently runs FP32 models in bf16 by default, so an
"FP32 baseline" is not FP32 unless INFERENCE_PRECISION_HINT is set. ``precision="auto"`` (the default of
every loader we ship) therefore pins float models to f32 and leaves a quantized model (one with FakeQuantize)
at the plugin's default: its int8 layers are unaffected by the hint, and its remaining float layers run
fastest in the CPU's native low-precision float (measured on an AMD EPYC Zen 5, MobileNetV3-Large INT8 IR,
batch 1, 2 threads, alternating rounds: 64 px 1.41 vs 3.64 ms, 224 px 12.4 vs 16.0 ms at default vs f32
hint; on a CPU without bf16 both are f32). The cost is agreement: bf16 float layers round differently
(export records agreement both ways). The precision the compiled model reports back is what reports carry.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import BenchInputError, RuntimeUnavailable
from edgepipe.runtimes.base import Runtime, Shape, check_batch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "f32", "bf16", "f16", "default")
HINTS = ("LATENCY", "THROUGHPUT")
MODEL_SUFFIXES = (".onnx", ".xml")
_VIRTUAL_DEVICES = {"AUTO", "HETERO", "MULTI", "BATCH"}
# Runtime-model layers that are bookkeeping rather than compute.
_NON_COMPUTE = {"Const", "Input", "Output", "Parameter", "Result"}
_CONVERT_LAYERS = {"Convert", "FakeQuantize"}
_MOVE_LAYERS = {"Reorder", "Reshape", "Transpose", "Concatenation", "Split"}
_INT8_EXEC = re.compile(r"(^|_)[iu]8$", re.IGNORECASE)


def _ov():
    try:
        import openvino
    except ImportError as e:
        raise RuntimeUnavailable("openvino is not installed; fix: pip install openvino") from e
    return openvino


def _check_device(core, device: str) -> None:
    base = device.split(":")[0].split(".")[0].upper()
    if base in _VIRTUAL_DEVICES:
        return
    available = list(core.available_devices)
    if device not in available and base not in {d.split(".")[0] for d in available}:
        raise RuntimeUnavailable(
            f"OpenVINO device '{device}' is not available (available: {', '.join(available) or 'none'}); "
            "fix: pass one of those devices or install its driver/plugin"
        )


def read_model(core, model_path):
    """Read an .onnx or IR .xml model, turning a bad file into a BenchInputError."""
    path = Path(model_path)
    if not path.is_file():
        raise BenchInputError(f"model file {path} does not exist; fix: pass an exported .onnx or IR .xml")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise BenchInputError(f"{path} is not an ONNX model or OpenVINO IR; fix: pass a .onnx or .xml file")
    try:
        return core.read_model(str(path))
    except RuntimeError as e:
        raise BenchInputError(
            f"{path} is not an ONNX model or IR OpenVINO can read; fix: re-export it (torch.onnx.export)"
        ) from e


def compile_config(device: str, threads: int, precision: str, hint: str, perf_count: bool = False) -> dict:
    """The compile properties that pin speed-relevant behaviour."""
    if precision not in PRECISIONS:
        raise BenchInputError(
            f"unknown OpenVINO precision '{precision}'; fix: use one of {', '.join(PRECISIONS)}"
        )
    if hint not in HINTS:
        raise BenchInputError(f"unknown OpenVINO hint '{hint}'; fix: use one of {', '.join(HINTS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if device.upper().startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision == "auto":
        raise BenchInputError(
            "precision 'auto' depends on the model; fix: resolve it with resolve_precision() first"
        )
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    if hint == "LATENCY":
        config["NUM_STREAMS"] = 1
    if perf_count:
        config["PERF_COUNT"] = True
    return config


def is_quantized(model) -> bool:
    """True when the OpenVINO model holds FakeQuantize ops (a QDQ ONNX reads in as FakeQuantize too)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def resolve_precision(precision: str, model) -> str:
    """'auto' -> 'default' for a quantized model (fastest: see the module docstring), 'f32' for a float."""
    if precision != "auto":
        return precision
    return "default" if is_quantized(model) else "f32"


def native_float_precisions(device: str = "CPU") -> tuple[str, ...]:
    """The float precisions this device runs natively, from OpenVINO's OPTIMIZATION_CAPABILITIES:
    ('f32',) on a CPU without bf16, ('f32', 'bf16') with AVX512_BF16 or AMX, plus 'f16' where it has FP16."""
    core = _ov().Core()
    try:
        caps = {str(c).upper() for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except RuntimeError:
        return ("f32",)
    return ("f32",) + tuple(p for p, cap in (("bf16", "BF16"), ("f16", "FP16")) if cap in caps)


def _type_name(value: Any) -> str:
    """OpenVINO returns ov.Type / enums / str for properties; reports want plain strings like 'f32'."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def read_back(compiled) -> dict[str, Any]:
    """The settings the compiled model actually uses; these, not the requested ones, go in reports."""
    out: dict[str, Any] = {}
    for key, prop in (
        ("precision", "INFERENCE_PRECISION_HINT"),
        ("threads", "INFERENCE_NUM_THREADS"),
        ("hint", "PERFORMANCE_HINT"),
        ("num_streams", "NUM_STREAMS"),
        ("execution_devices", "EXECUTION_DEVICES"),
    ):
        try:
            value = compiled.get_property(prop)
        except RuntimeError:  # not every device supports every property
            continue
        out[key] = value if isinstance(value, int | list) else _type_name(value)
    return out


def _compile(core, model, shape: tuple[int, ...] | None, device: str, config: dict):
    """Compile `model`, reshaped to a static `shape` first so the CPU plugin can pick static kernels."""
    if shape is not None:
        model = model.clone()
        model.reshape(list(shape))
    try:
        return core.compile_model(model, device, config)
    except RuntimeError as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip() and "Exception from" not in ln), str(e))
        raise RuntimeUnavailable(
            f"OpenVINO could not compile the model for {device} with {config} ({first[:160]}); "
            "fix: try precision='default' or another device"
        ) from e


class OpenVinoRuntime(Runtime):
    """OpenVINO compiled model; one static compile per input shape seen (cached), since dynamic-shape
    models miss the CPU plugin's fused static kernels."""

    name = "openvino"

    def __init__(
        self,
        model_path,
        device: str = "CPU",
        threads: int = 2,
        precision: str = "auto",
        hint: str = "LATENCY",
    ):
        ov = _ov()
        self.model_path = Path(model_path)
        self.device = device
        self.core = ov.Core()
        _check_device(self.core, device)
        compile_config(device, threads, "default" if precision == "auto" else precision, hint)  # validate
        self.model = read_model(self.core, model_path)
        requested, precision = precision, resolve_precision(precision, self.model)
        self.config = compile_config(device, threads, precision, hint)
        if len(self.model.inputs) != 1:
            raise BenchInputError(
                f"{self.model_path} has {len(self.model.inputs)} inputs; "
                "fix: export a single-input classifier"
            )
        partial = self.model.inputs[0].get_partial_shape()
        self._static = tuple(d.get_length() for d in partial) if partial.is_static else None
        self.input_shape: Shape = _any_batch(partial)
        self._compiled: dict[tuple[int, ...], tuple[Any, Any]] = {}
        first = tuple(1 if d is None and i == 0 else d for i, d in enumerate(self.input_shape))
        if None in first:  # other dims dynamic too: compile as-is just to read the effective settings back
            compiled = _compile(self.core, self.model, None, device, self.config)
        else:
            compiled = self._get(first)[0]
        self.effective = read_back(compiled)
        self.options = {
            "device": device,
            "threads": int(threads),
            "precision": precision,
            "requested_precision": requested,
            "hint": hint,
            "config": dict(self.config),
            "effective": self.effective,
        }
        if precision != "default" and self.effective.get("precision") not in (None, precision):
            log.warning(
                "OpenVINO asked for %s but compiled model reports %s",
                precision,
                self.effective.get("precision"),
            )
        log.info("OpenVINO %s on %s: %s", self.model_path.name, device, self.effective)

    def _get(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            as_is = shape == self._static
            compiled = _compile(self.core, self.model, None if as_is else shape, self.device, self.config)
            self._compiled[shape] = (compiled, compiled.create_infer_request())
            log.debug("compiled %s for input shape %s", self.model_path.name, shape)
        return self._compiled[shape]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self.input_shape, what=f"OpenVINO model {self.model_path.name}")
        compiled, request = self._get(tuple(batch.shape))
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.model_path),
            "compiled_shapes": [list(s) for s in self._compiled],
        }


def _is_int8_exec(exec_type: str) -> bool:
    return bool(_INT8_EXEC.search(exec_type))


def ov_op_account(
    model_path, precision: str, threads: int, sample: np.ndarray, runs: int = 20, device: str = "CPU"
) -> dict[str, Any]:
    """What precision each op of the compiled (fused) model runs in, and where the time goes.

    OpenVINO decides INT8 per fused node; the source graph's Q/DQ ops say nothing about which kernels
    actually run in i8/u8, so we read the runtime model and per-node profiling counters.
    """
    ov = _ov()
    if runs < 1:
        raise BenchInputError(f"runs must be >= 1, got {runs}; fix: pass runs=20 or more")
    core = ov.Core()
    _check_device(core, device)
    model = read_model(core, model_path)
    partial = model.inputs[0].get_partial_shape()
    sample = check_batch(sample, _any_batch(partial), what="op account sample")
    as_is = partial.is_static and tuple(d.get_length() for d in partial) == tuple(sample.shape)
    config = compile_config(device, threads, resolve_precision(precision, model), "LATENCY", perf_count=True)
    compiled = _compile(core, model, None if as_is else tuple(sample.shape), device, config)

    ops = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        info = {k: rt[k].astype(str) for k in ("layerType", "runtimePrecision", "primitiveType") if k in rt}
        if info.get("layerType") in _NON_COMPUTE:
            continue
        ops.append(
            {
                "name": op.get_friendly_name(),
                "type": info.get("layerType", op.get_type_name()),
                "precision": info.get("runtimePrecision", "?"),
                "exec_type": info.get("primitiveType", "?"),
            }
        )
    precision_counts = Counter(o["precision"] for o in ops)
    # Compute layers whose kernel runs on i8/u8 data; converts and pure data movement excluded.
    int8_compute = [
        o["name"]
        for o in ops
        if o["precision"] in ("i8", "u8") and o["type"] not in _CONVERT_LAYERS | _MOVE_LAYERS
    ]

    request = compiled.create_infer_request()
    request.infer({0: sample})  # warm-up: first run includes one-time weight repacking
    by_type: dict[str, float] = defaultdict(float)
    by_exec: dict[str, float] = defaultdict(float)
    kind_time = {"int8": 0.0, "convert": 0.0, "float": 0.0}
    for _ in range(int(runs)):
        request.infer({0: sample})
        for p in request.get_profiling_info():  # counters of the last inference only, so sum per run
            if p.status != p.Status.EXECUTED:
                continue
            us = p.real_time.total_seconds() * 1e6
            by_type[p.node_type] += us
            by_exec[f"{p.node_type}:{p.exec_type}"] += us
            kind = (
                "convert"
                if p.node_type in _CONVERT_LAYERS
                else "int8"
                if _is_int8_exec(p.exec_type)
                else "float"
            )
            kind_time[kind] += us
    total = sum(kind_time.values()) or 1.0
    result = {
        "precision_counts": dict(sorted(precision_counts.items())),
        "int8_compute_ops": int8_compute,
        "ops": ops,
        "time_by_type_us": {k: round(v, 1) for k, v in sorted(by_type.items(), key=lambda x: -x[1])},
        "time_by_exec_type_us": {k: round(v, 1) for k, v in sorted(by_exec.items(), key=lambda x: -x[1])},
        "time_share_by_kind": {k: round(v / total, 4) for k, v in kind_time.items()},
        "int8_time_share": round(kind_time["int8"] / total, 4),
        "effective": read_back(compiled),
        "runs": int(runs),
        "threads": int(threads),
    }
    log.info(
        "OpenVINO op account for %s: precisions %s, int8 time share %.2f",
        model_path,
        result["precision_counts"],
        result["int8_time_share"],
    )
    return result


def convert_to_ir(onnx_path, xml_path, compress_to_fp16: bool = False, batch: int | None = 1) -> Path:
    """ONNX -> OpenVINO IR (.xml + .bin). Written under temp names and renamed, old .xml removed first,
    so a killed run leaves either no IR or a whole one (readers find an IR by its .xml)."""
    ov = _ov()
    src, xml = Path(onnx_path), Path(xml_path)
    if xml.suffix != ".xml":
        raise BenchInputError(f"IR path {xml} must end in .xml; fix: pass e.g. model.xml")
    if not src.is_file() or src.suffix.lower() != ".onnx":
        raise BenchInputError(f"{src} is not an existing .onnx file; fix: export the model to ONNX first")
    try:
        model = ov.convert_model(str(src))
    except Exception as e:  # OpenVINO raises several frontend error types for unreadable files
        raise BenchInputError(f"{src} is not an ONNX model OpenVINO can convert; fix: re-export it") from e
    save_ir(model, xml, compress_to_fp16, batch)
    return xml


def _any_batch(partial) -> Shape:
    """The input shape a batch is checked against: any batch size, the other dims as the model fixes them
    (a static-batch IR, as save_ir writes it, is reshaped to the batch given like a dynamic one)."""
    return tuple(None if i == 0 or not d.is_static else d.get_length() for i, d in enumerate(partial))


def static_batch(model, batch: int = 1) -> bool:
    """Fix a single-input model's dynamic batch dimension to ``batch`` (the other dims static). OpenVINO's
    CPU plugin compiles a dynamic batch into slower shape-agnostic kernels: a user's plain
    ``core.compile_model("int8.xml", "CPU")`` then ran our MobileNetV3 INT8 IR at 0.539 ms against 0.350 ms
    with batch 1 fixed, slower than the FP32 IR (AMD EPYC Zen 5, 48 px; benchmarks/results/
    int8_speedup_amd-epyc-zen5.md, "Loaded the usual way"). Other batch sizes:
    ``model.reshape([N, 3, H, W])``, as our loader does."""
    if len(model.inputs) != 1:
        return False
    dims = list(model.inputs[0].get_partial_shape())
    if not dims or dims[0].is_static or not all(d.is_static for d in dims[1:]):
        return False
    model.reshape([batch, *(d.get_length() for d in dims[1:])])
    return True


def save_ir(model, xml_path, compress_to_fp16: bool = False, batch: int | None = 1) -> Path:
    """Save an ov.Model as IR under temp names, old .xml removed first and the new .xml renamed in last, so a
    killed run leaves either no IR or a whole one. A dynamic batch is fixed to ``batch`` (None: kept) so the
    IR is fast when loaded the usual way (static_batch)."""
    ov = _ov()
    if batch is not None:
        static_batch(model, batch)
    xml = Path(xml_path)
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = xml.with_name(f".{xml.stem}.tmp{os.getpid()}.xml")
    tmp_bin, bin_path = tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        xml.unlink(missing_ok=True)
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_xml, xml)
    finally:
        tmp_xml.unlink(missing_ok=True)
        tmp_bin.unlink(missing_ok=True)
    log.info("wrote OpenVINO IR %s (compress_to_fp16=%s)", xml, compress_to_fp16)
    return xml
