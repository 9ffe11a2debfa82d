"""ONNX Runtime backend, plus an op account that shows which ops really ran in INT8 after ORT's fusions."""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import BenchInputError, RuntimeUnavailable
from edgepipe.runtimes.base import Runtime, check_batch, normalize_shape

log = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
# Ops that only move or reshape data: they run in whatever dtype flows through, so they are neither side.
LAYOUT_OPS = frozenset(
    {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "ReorderInput", "ReorderOutput"}
)
CONVERT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeUnavailable("onnxruntime is not installed; fix: pip install onnxruntime") from e
    return onnxruntime


def op_kind(op_type: str) -> str:
    """Classify an ORT op type as 'int8', 'convert', 'layout' or 'float' by name."""
    if op_type in CONVERT_OPS:
        return "convert"
    if (
        op_type.startswith("QLinear")
        or "Integer" in op_type
        or op_type.startswith("DynamicQuantize")
        # NhwcMaxPool: ORT's int8/uint8-only max pool, fused from DQ -> MaxPool -> Q (ResNet's stem)
        or op_type in {"QGemm", "QAttention", "QEmbedLayerNormalization", "NhwcMaxPool"}
    ):
        return "int8"
    if op_type in LAYOUT_OPS:
        return "layout"
    return "float"


def disabled_optimizers(path: Path) -> list[str]:
    """Optimizers the model asks to be off (metadata ``ort_disabled_optimizers``): an INT8 model with layers
    kept in float (export.float_layers) needs WeightBiasQuantization off, or ORT re-quantizes them."""
    import onnx

    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:  # noqa: BLE001 - unreadable files are reported by InferenceSession itself
        return []
    value = next((p.value for p in props if p.key == "ort_disabled_optimizers"), None)
    try:
        names = json.loads(value) if value else []
    except json.JSONDecodeError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def make_session(
    model_path,
    threads: int = 2,
    providers: list[str] | None = None,
    optimization: str = "all",
    disabled: tuple[str, ...] | None = None,
    **session_attrs: Any,
):
    """Build an InferenceSession with pinned threading so every measurement is reproducible; ``disabled``:
    the optimizers to turn off (default: those the model's metadata names)."""
    ort = _ort()
    path = Path(model_path)
    if not path.is_file():
        raise BenchInputError(f"model file {path} does not exist; fix: pass the path of an exported .onnx")
    if optimization not in OPTIMIZATION_LEVELS:
        raise BenchInputError(
            f"unknown ORT optimization '{optimization}'; fix: use one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    providers = list(providers or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise RuntimeUnavailable(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available "
            f"(available: {', '.join(available)}); "
            "fix: pip install the matching onnxruntime build (e.g. onnxruntime-gpu) or change providers"
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    for key, value in session_attrs.items():
        setattr(so, key, value)
    state = ort.capi.onnxruntime_pybind11_state
    try:
        return ort.InferenceSession(
            str(path),
            so,
            providers=providers,
            disabled_optimizers=list(disabled) if disabled is not None else disabled_optimizers(path),
        )
    except (state.InvalidProtobuf, state.InvalidGraph, state.NoModel) as e:
        raise BenchInputError(
            f"{path} is not an ONNX model ORT can load ({str(e).splitlines()[0][:160]}); "
            "fix: pass a file written by torch.onnx.export / the export stage"
        ) from e


class OrtRuntime(Runtime):
    """ONNX Runtime session with explicit threads, providers and graph optimization level."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path,
        threads: int = 2,
        providers: list[str] | None = None,
        optimization: str = "all",
    ):
        self.model_path = Path(model_path)
        self.session = make_session(model_path, threads, providers, optimization)
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        self.input_shape = normalize_shape(meta.shape)
        self.input_dtype = _ORT_TYPES.get(meta.type, np.float32)
        self.options = {
            "threads": int(threads),
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "providers": self.session.get_providers(),
            "optimization": optimization,
        }

    def predict(self, batch: np.ndarray) -> np.ndarray:
        what = f"ONNX model {self.model_path.name}"
        batch = check_batch(batch, self.input_shape, self.input_dtype, what=what)
        return np.asarray(self.session.run(None, {self.input_name: batch})[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.model_path)}


def _warm_end(events: list[dict]) -> float:
    """When the first model_run ended (its kernels are the warm-up: allocations, prepacking); -1: one run."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    return runs[0]["ts"] + runs[0]["dur"] if len(runs) > 1 else -1


def _kernel_events(events: list[dict]):
    """(node name, op type, µs) of every kernel that ran after the warm-up run."""
    warm_end = _warm_end(events)
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e["ts"] <= warm_end:
            continue
        yield name[: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), float(e.get("dur", 0))


def _node_times(events: list[dict]) -> dict[str, float]:
    """Sum kernel time (µs) per op type, ignoring the first model_run (warm-up)."""
    times: dict[str, float] = defaultdict(float)
    for _, op, dur in _kernel_events(events):
        times[op] += dur
    return dict(times)


def profile_events(model_path, threads: int, sample: np.ndarray, runs: int) -> list[dict]:
    """ORT's profile of ``runs`` + 1 runs (the first: warm-up), written to and read back from a temp
    folder, so no ``onnxruntime_profile_*.json`` is ever left in the working directory."""
    if runs < 1:
        raise BenchInputError(f"runs must be >= 1, got {runs}; fix: pass runs=20 or more")
    with tempfile.TemporaryDirectory(prefix="edgepipe-ort-") as tmp:
        prof = make_session(
            model_path, threads, enable_profiling=True, profile_file_prefix=str(Path(tmp) / "profile"),
            log_severity_level=3,
        )
        meta = prof.get_inputs()[0]
        feed = {meta.name: check_batch(sample, normalize_shape(meta.shape), what="profile sample")}
        for _ in range(int(runs) + 1):
            prof.run(None, feed)
        return json.loads(Path(prof.end_profiling()).read_text())


def node_profile(model_path, threads: int, sample: np.ndarray, runs: int = 30) -> dict[str, dict[str, Any]]:
    """Per executed node (ORT's names, after fusion): its op type and the median of its kernel times (ms),
    slowest first; the warm-up run is dropped."""
    durations: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for name, op, dur in _kernel_events(profile_events(model_path, threads, sample, runs)):
        durations[name].append(dur)
        ops[name] = op
    nodes = {name: {"op": ops[name], "ms": float(np.median(d)) / 1e3} for name, d in durations.items()}
    return dict(sorted(nodes.items(), key=lambda kv: -kv[1]["ms"]))


def ort_op_account(model_path, threads: int, sample: np.ndarray, runs: int = 20) -> dict[str, Any]:
    """Which op types ORT actually executes after fusion, and where the time goes.

    A QDQ model only helps if ORT fuses Q/DQ pairs into QLinear* kernels; counting ops in the *source*
    graph cannot tell, so we ask ORT for its optimized graph and profile a real run.
    """
    import onnx

    if runs < 1:
        raise BenchInputError(f"runs must be >= 1, got {runs}; fix: pass runs=20 or more")
    with tempfile.TemporaryDirectory(prefix="edgepipe-ort-") as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        make_session(model_path, threads, optimized_model_filepath=str(opt_path), log_severity_level=3)
        graph = onnx.load(str(opt_path), load_external_data=False).graph
        counts = Counter(n.op_type for n in graph.node)

    events = profile_events(model_path, threads, sample, runs)
    times = _node_times(events)
    total = sum(times.values()) or 1.0
    kinds = {op: op_kind(op) for op in set(counts) | set(times)}
    share = {op: t / total for op, t in times.items()}
    by_kind = {
        k: sum(t for op, t in times.items() if kinds[op] == k) / total
        for k in ("int8", "convert", "layout", "float")
    }
    result = {
        "optimized_op_counts": dict(sorted(counts.items())),
        "int8_ops": sorted(op for op in counts if kinds[op] == "int8"),
        "convert_ops": sorted(op for op in counts if kinds[op] == "convert"),
        "layout_ops": sorted(op for op in counts if kinds[op] == "layout"),
        "float_ops": sorted(op for op in counts if kinds[op] == "float"),
        "time_by_op_type_us": {op: round(t, 1) for op, t in sorted(times.items(), key=lambda x: -x[1])},
        "time_share_by_op_type": {op: round(s, 4) for op, s in sorted(share.items(), key=lambda x: -x[1])},
        "time_share_by_kind": {k: round(v, 4) for k, v in by_kind.items()},
        "int8_time_share": round(by_kind["int8"], 4),
        "runs": int(runs),
        "threads": int(threads),
    }
    log.info(
        "ORT op account for %s: int8 ops %s, int8 time share %.2f",
        model_path,
        result["int8_ops"],
        result["int8_time_share"],
    )
    return result
