"""One interface for every inference backend, so benchmarks and parity checks never special-case one."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from edgepipe.errors import BenchInputError

log = logging.getLogger(__name__)

Shape = tuple[int | None, ...]


class Runtime(ABC):
    """A loaded model ready to run float32 NCHW batches.

    `options` holds everything that affects speed (threads, precision, providers...) because a
    latency number is meaningless in a report without the settings that produced it.
    """

    name: str = "runtime"
    options: dict[str, Any]
    input_shape: Shape

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 NCHW batch in, float32 logits (batch, classes) out."""

    def describe(self) -> dict[str, Any]:
        """What a report needs to reproduce the measurement: runtime, settings and input shape."""
        return {"runtime": self.name, "options": dict(self.options), "input_shape": list(self.input_shape)}


def normalize_shape(dims) -> Shape:
    """Turn backend dims (strings, -1, 0, None for dynamic) into a tuple with None for dynamic."""
    out: list[int | None] = []
    for d in dims:
        out.append(d if isinstance(d, int) and d > 0 else None)
    return tuple(out)


def check_batch(batch: np.ndarray, expected: Shape, dtype=np.float32, what: str = "model") -> np.ndarray:
    """Reject a wrong batch with a readable message instead of a backend stack trace."""
    if not isinstance(batch, np.ndarray):
        raise BenchInputError(
            f"{what} expects a numpy array, got {type(batch).__name__}; fix: pass an np.ndarray"
        )
    if batch.dtype != np.dtype(dtype):
        raise BenchInputError(
            f"{what} expects dtype {np.dtype(dtype).name}, got {batch.dtype.name}; "
            f"fix: batch.astype(np.{np.dtype(dtype).name})"
        )
    shown = tuple("?" if d is None else d for d in expected)
    if batch.ndim != len(expected) or any(
        e is not None and e != g for e, g in zip(expected, batch.shape, strict=True)
    ):
        raise BenchInputError(
            f"{what} expects input shape {shown}, got {tuple(batch.shape)}; "
            "fix: resize/transpose the batch to match"
        )
    return np.ascontiguousarray(batch)
