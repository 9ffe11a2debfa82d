"""Peak resident memory of one measurement, reported apart from latency.

A process-lifetime peak (``ru_maxrss``) only grows, so the second model benched in a process would show
nothing. On Linux we reset the kernel's high-water mark (``/proc/self/clear_refs``, value 5) before each
measurement and read ``VmHWM`` after it; elsewhere we fall back to ``ru_maxrss`` and say it is a lower bound.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(key: str) -> float | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


def _release_freed() -> None:
    """Hand memory freed by earlier measurements back to the OS, or it would absorb this one's rise."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the rise may read low after earlier runtimes
        pass


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.result()``: RSS before, peak RSS during, and the rise."""

    def __enter__(self) -> PeakMemory:
        _release_freed()
        try:
            _CLEAR_REFS.write_text("5")
            self.method = "VmHWM after clear_refs reset (Linux)"
        except OSError:
            self.method = "ru_maxrss (process-lifetime peak: the rise is a lower bound)"
            self.before = _maxrss_mb()
            return self
        self.before = _status_mb("VmRSS") or 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_mb("VmHWM") if self.method.startswith("VmHWM") else None
        self.peak = hwm if hwm is not None else _maxrss_mb()

    def result(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rss_before_mb": round(self.before, 1),
            "peak_rss_mb": round(self.peak, 1),
            "peak_delta_mb": round(max(0.0, self.peak - self.before), 1),
        }
