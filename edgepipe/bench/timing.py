"""Latency timing and machine description, so every reported speed-up carries its spread and its hardware."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgepipe.cpu import CPUINFO, cpu_info
from edgepipe.errors import BenchInputError
from edgepipe.runtimes.registry import runtime_specs

log = logging.getLogger(__name__)

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")
# every runtime's backend package (registry order, torch first), and what the models are read and fed with
PACKAGES = tuple(dict.fromkeys(("torch", "onnx", *(s.package for s in runtime_specs()), "numpy")))
_CPUINFO = CPUINFO


def time_callable(
    fn: Callable[[], Any],
    warmup: int,
    min_iters: int,
    min_seconds: float,
    batch_size: int = 1,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Time ``fn()`` until both ``min_iters`` and ``min_seconds`` of measured time are reached.

    The first call is reported apart as ``cold_ms`` (lazy init, allocator and cache warm-up make it
    unrepresentative); it is always made and counts as one of the ``warmup`` calls, which never enter the
    statistics. The stopping rule sums measured call times, so loop overhead never fills ``min_seconds``.
    ``keep_samples`` adds every measured time as ``samples_ms``, for distribution plots.
    """
    if not callable(fn):
        raise BenchInputError(f"fn must be callable, got {type(fn).__name__}; fix: pass e.g. a lambda")
    if warmup < 0 or min_iters < 1 or min_seconds < 0 or batch_size < 1:
        raise BenchInputError(
            f"bad timing budget (warmup={warmup}, min_iters={min_iters}, min_seconds={min_seconds}, "
            f"batch_size={batch_size}); fix: use warmup>=0, min_iters>=1, min_seconds>=0, batch_size>=1"
        )
    start = time.perf_counter()
    fn()
    cold_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup - 1):
        fn()

    samples: list[float] = []
    measured = 0.0
    while len(samples) < min_iters or measured < min_seconds:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        measured += elapsed
    ms = np.asarray(samples) * 1e3
    mean_ms = float(ms.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    log.debug("timed %d iters in %.3f s (cold %.3f ms, p50 %.3f ms)", len(ms), measured, cold_ms, p50)
    stats: dict[str, Any] = {
        "cold_ms": cold_ms,
        "iters": len(ms),
        "mean_ms": mean_ms,
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "min_ms": float(ms.min()),
        "throughput_ips": batch_size * 1000.0 / mean_ms if mean_ms > 0 else float("inf"),
        "batch_size": batch_size,
    }
    if keep_samples:
        stats["samples_ms"] = ms.tolist()
    return stats


def environment() -> dict[str, Any]:
    """CPU, ISA flags and package versions: INT8 speed-ups hinge on VNNI/AMX, so timings need them."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model or platform.processor() or platform.machine() or "unknown",
        "cpu_name": cpu_name(),
        "logical_cores": os.cpu_count(),
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
    }


# (vendor, family, model) -> microarchitecture, for naming results per CPU ("amd-epyc-zen5"); the model name
# alone often says only "AMD EPYC" under a hypervisor.
_UARCH = {
    ("AuthenticAMD", 23, None): "zen2",
    ("AuthenticAMD", 25, None): "zen3",
    ("AuthenticAMD", 26, None): "zen5",
    ("GenuineIntel", 6, 85): "skylake-cascadelake",
    ("GenuineIntel", 6, 106): "icelake",
    ("GenuineIntel", 6, 143): "sapphirerapids",
    ("GenuineIntel", 6, 207): "emeraldrapids",
    ("GenuineIntel", 6, 173): "graniterapids",
}


def cpu_name() -> str:
    """A short file-name-safe CPU name, e.g. ``amd-epyc-zen5`` or ``intel-xeon-cascadelake``."""
    import re

    if not _CPUINFO.is_file():
        return re.sub(r"[^a-z0-9]+", "-", (platform.machine() or "unknown").lower()).strip("-")
    info = cpu_info(_CPUINFO)
    vendor, model_name = info["vendor"], info["model_name"]
    family, model = int(info["family"] or 0), int(info["model"] or 0)
    uarch = _UARCH.get((vendor, family, model)) or _UARCH.get((vendor, family, None), "")
    if uarch == "zen3" and "avx512f" in info["flags"]:
        uarch = "zen4"  # family 25 covers Zen 3 and Zen 4; only Zen 4 has AVX-512
    if uarch == "skylake-cascadelake":
        uarch = "cascadelake" if int(info["stepping"] or 0) >= 5 else "skylake"
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*|\d+-core", " ", model_name.lower())
    base = "-".join(re.findall(r"[a-z]+", words)[:2]) or vendor.lower() or "cpu"
    return f"{base}-{uarch or f'f{family}m{model}'}"


def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and flag set (empty off Linux or when unreadable)."""
    info = cpu_info(_CPUINFO) if _CPUINFO.is_file() else {"model_name": "", "flags": []}
    return info["model_name"], set(info["flags"])


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
