"""Inference backends behind one `Runtime` interface; each backend is imported only when asked for.

Which runtimes exist, what they load and which options they take is edgepipe.runtimes.registry's table."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.runtimes.base import Runtime
from edgepipe.runtimes.registry import float_modes, runtime_names, runtime_spec

log = logging.getLogger(__name__)

RUNTIME_NAMES: tuple[str, ...] = runtime_names()


def get_runtime(name: str, model_path: Any, **options: Any) -> Runtime:
    """Build the named runtime; for "torch", `model_path` may be an nn.Module or a torch.export .pt2 file."""
    cls = runtime_spec(name).load()
    log.debug("building runtime %s for %s with %s", name, model_path, options)
    return cls(model_path, **options)


__all__ = ["RUNTIME_NAMES", "Runtime", "float_modes", "get_runtime"]
