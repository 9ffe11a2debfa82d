"""Inference backends behind one `Runtime` interface; each backend is imported only when asked for."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from edgepipe.errors import BenchInputError
from edgepipe.runtimes.base import Runtime

log = logging.getLogger(__name__)

# name -> (module, class): modules are imported lazily so a missing backend only hurts its own users.
_RUNTIMES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("edgepipe.runtimes.onnxruntime", "OrtRuntime"),
    "openvino": ("edgepipe.runtimes.openvino", "OpenVinoRuntime"),
    "torch": ("edgepipe.runtimes.torch", "TorchRuntime"),
}

RUNTIME_NAMES: tuple[str, ...] = tuple(_RUNTIMES)


def get_runtime(name: str, model_path: Any, **options: Any) -> Runtime:
    """Build the named runtime; for "torch", `model_path` may be an nn.Module or a torch.export .pt2 file."""
    if name not in _RUNTIMES:
        raise BenchInputError(f"unknown runtime '{name}'; fix: use one of {', '.join(RUNTIME_NAMES)}")
    module_name, cls_name = _RUNTIMES[name]
    cls = getattr(importlib.import_module(module_name), cls_name)
    log.debug("building runtime %s for %s with %s", name, model_path, options)
    return cls(model_path, **options)


def float_modes(runtime: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, options) for each float mode ``runtime`` runs natively on this machine: the candidates for
    its float baseline, the fastest of which an INT8 speed-up must be measured against.

    ONNX Runtime's CPU provider has f32 kernels only on x86 (its fp16 kernels are ARM-only), so f32 is its
    one float mode; OpenVINO adds bf16 (AVX512_BF16/AMX) or f16 where the device reports them."""
    if runtime not in _RUNTIMES:
        raise BenchInputError(f"unknown runtime '{runtime}'; fix: use one of {', '.join(RUNTIME_NAMES)}")
    if runtime == "openvino":
        from edgepipe.runtimes.openvino import native_float_precisions

        return [(p, {"precision": p}) for p in native_float_precisions()]
    return [("f32", {})]


__all__ = ["RUNTIME_NAMES", "Runtime", "float_modes", "get_runtime"]
