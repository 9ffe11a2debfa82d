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


__all__ = ["RUNTIME_NAMES", "Runtime", "get_runtime"]
