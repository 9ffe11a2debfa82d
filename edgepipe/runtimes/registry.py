"""Every runtime and every model file kind edgepipe knows, one table each (Ultralytics' ``export_formats``).

Loading, `edgepipe bench`, the stages, the target checks, ensembles and reports iterate these tables or ask
for a role (``runtime_for``) instead of spelling runtime names; a new runtime is its backend module plus one
``RuntimeSpec`` here (and its test). Runtime names are typed only by users: in a recipe, on the command line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgepipe.errors import BenchInputError


@dataclass(frozen=True)
class RuntimeSpec:
    """What edgepipe knows about one runtime."""

    name: str
    backend: str  # "module:Class" implementing edgepipe.runtimes.base.Runtime, imported lazily
    package: str  # the import (and pip) name of the backend library: checked before any timing
    suffixes: tuple[str, ...]  # model files it loads itself
    artifact: str | None  # the export stage's output key prefix it runs (onnx_fp32, ir_int8...), if any
    options: tuple[str, ...]  # keyword options its constructor takes (besides the model)
    float_modes: str | None = None  # "module:function" -> native float precisions here; None: f32 only
    profiler: str | None = None  # "module:function": per-op account (op type -> INT8/float kernel time)
    isa: tuple[str, ...] = ()  # /proc/cpuinfo flags its fast paths depend on (VNNI for INT8, bf16 units)
    title: str = ""  # as reports and messages name it ("ONNX Runtime")
    roles: tuple[str, ...] = ()  # what else edgepipe runs on it (ROLES); each role is one runtime's
    qdq: str | None = None  # the Q/DQ placement it runs an INT8 ONNX fastest in (quant.export.QDQ_SHAPES)
    target_kernel: str | None = None  # its int8 kernels as a target check names them; None: the target's own

    @property
    def takes_precision(self) -> bool:
        """It has an inference-precision option, so its rows carry a precision and a performance hint."""
        return "precision" in self.options

    def load(self) -> type:
        module, _, cls = self.backend.partition(":")
        return getattr(importlib.import_module(module), cls)

    def native_floats(self) -> tuple[str, ...]:
        """The float precisions this runtime runs natively on this machine (f32 first)."""
        if self.float_modes is None:
            return ("f32",)
        module, _, fn = self.float_modes.partition(":")
        return tuple(getattr(importlib.import_module(module), fn)())

    def profile_fn(self) -> Callable[..., dict[str, Any]] | None:
        if self.profiler is None:
            return None
        module, _, fn = self.profiler.partition(":")
        return getattr(importlib.import_module(module), fn)


@dataclass(frozen=True)
class ModelKind:
    """A model file kind: the suffixes that mark it, the runtimes that can run it, the one run by default."""

    name: str
    suffixes: tuple[str, ...]
    runtimes: tuple[str, ...]
    natural: str
    note: str = ""


# The jobs edgepipe gives one runtime, looked up with runtime_for(role) instead of by its name.
ROLES = {
    "onnx": "runs every .onnx edgepipe checks: export's agreement with torch and the target checks (its "
    "kernels are the ones targets.registry describes), the models on a device, ensembles, a sweep's headline",
    "ir": "runs the model file export converts for it (export.openvino), checked beside the ONNX",
}

_SPECS: dict[str, RuntimeSpec] = {}
_KINDS: dict[str, ModelKind] = {}


def _add(table: dict, name: str, entry: Any, what: str) -> Any:
    """Registries refuse a second entry of a name: one source of truth for names."""
    if name in table:
        raise ValueError(f"{what} '{name}' is registered twice")
    table[name] = entry
    return entry


def register_runtime(spec: RuntimeSpec) -> RuntimeSpec:
    for role in spec.roles:
        holder = next((s.name for s in _SPECS.values() if role in s.roles), None)
        if role not in ROLES or holder is not None:
            why = f"'{holder}' has it" if holder else f"roles are {', '.join(ROLES)}"
            raise ValueError(f"runtime '{spec.name}' takes role '{role}': {why}")
    return _add(_SPECS, spec.name, spec, "runtime")


def register_kind(kind: ModelKind) -> ModelKind:
    unknown = [r for r in (*kind.runtimes, kind.natural) if r not in _SPECS]
    if unknown or kind.natural not in kind.runtimes:
        raise ValueError(f"model kind '{kind.name}' names runtimes {unknown or [kind.natural]} it cannot use")
    return _add(_KINDS, kind.name, kind, "model kind")


register_runtime(
    RuntimeSpec(
        name="onnxruntime",
        backend="edgepipe.runtimes.onnxruntime:OrtRuntime",
        package="onnxruntime",
        suffixes=(".onnx",),
        artifact="onnx",
        options=("threads", "providers", "optimization"),
        profiler="edgepipe.runtimes.onnxruntime:ort_op_account",
        isa=("avx2", "avx512_vnni", "avx_vnni", "amx_int8"),  # its CPU provider has no x86 fp16/bf16 kernels
        title="ONNX Runtime",
        roles=("onnx",),
        qdq="integer",  # HardSwish gates as integer Add/Mul: every layer on its QLinear* kernels
    )
)
register_runtime(
    RuntimeSpec(
        name="openvino",
        backend="edgepipe.runtimes.openvino:OpenVinoRuntime",
        package="openvino",
        suffixes=(".onnx", ".xml"),
        artifact="ir",
        options=("device", "threads", "precision", "hint"),
        float_modes="edgepipe.runtimes.openvino:native_float_precisions",
        profiler="edgepipe.runtimes.openvino:ov_op_account",
        isa=("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16"),
        title="OpenVINO",
        roles=("ir",),
        qdq="fused",  # HardSwish fused into its int8 convolution, squeeze-excite in float (NNCF's placement)
        target_kernel="OpenVINO CPU plugin's own int8 kernels for this ISA",
    )
)
register_runtime(
    RuntimeSpec(
        name="torch",
        backend="edgepipe.runtimes.torch:TorchRuntime",
        package="torch",
        suffixes=(".pt", ".pth", ".pt2"),
        artifact=None,
        options=("threads", "input_shape"),
        title="torch",
    )
)

register_kind(ModelKind("onnx", (".onnx",), ("onnxruntime", "openvino"), "onnxruntime"))
register_kind(ModelKind("openvino-ir", (".xml",), ("openvino",), "openvino"))
register_kind(
    ModelKind(
        "checkpoint",
        (".pt", ".pth"),
        ("torch", "onnxruntime", "openvino"),
        "torch",
        note="ONNX Runtime and OpenVINO run a temporary ONNX export of it",
    )
)
register_kind(ModelKind("torch-export", (".pt2",), ("torch",), "torch"))


def runtime_names() -> tuple[str, ...]:
    return tuple(_SPECS)


def runtime_spec(name: str) -> RuntimeSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise BenchInputError(f"unknown runtime '{name}'; fix: use one of {', '.join(_SPECS)}") from None


def runtime_specs() -> tuple[RuntimeSpec, ...]:
    return tuple(_SPECS.values())


def runtime_for(role: str) -> RuntimeSpec:
    """The runtime that holds ``role`` (ROLES): where edgepipe needs a job done, not a runtime by name."""
    spec = next((s for s in _SPECS.values() if role in s.roles), None)
    if spec is None:
        raise LookupError(f"no runtime holds the role '{role}' (roles: {', '.join(ROLES)})")
    return spec


def artifact_runtimes() -> tuple[str, ...]:
    """The runtimes that run a file the export stage makes (bench.runtimes may name these)."""
    return tuple(s.name for s in _SPECS.values() if s.artifact is not None)


def qdq_runtimes() -> tuple[str, ...]:
    """The runtimes with a Q/DQ placement of their own (export.openvino_qdq may name these)."""
    return tuple(s.name for s in _SPECS.values() if s.qdq is not None)


def model_kinds() -> tuple[ModelKind, ...]:
    return tuple(_KINDS.values())


def model_kind(name: str) -> ModelKind:
    return _KINDS[name]


def kind_of_suffix(suffix: str) -> ModelKind | None:
    """The model kind a file suffix marks (case-insensitive), or None."""
    return next((k for k in _KINDS.values() if suffix.lower() in k.suffixes), None)


def float_modes(runtime: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, options) for each float mode ``runtime`` runs natively on this machine: the candidates for
    its float baseline, the fastest of which an INT8 speed-up must be measured against.

    ONNX Runtime's CPU provider has f32 kernels only on x86 (its fp16 kernels are ARM-only), so f32 is its
    one float mode; OpenVINO adds bf16 (AVX512_BF16/AMX) or f16 where the device reports them."""
    spec = runtime_spec(runtime)
    if not spec.takes_precision:
        return [("f32", {})]
    return [(p, {"precision": p}) for p in spec.native_floats()]
