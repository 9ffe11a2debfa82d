"""What this machine's CPU is, read once from /proc/cpuinfo: bench environments, result file names, the
training autotuner and the runtimes' float modes all ask here."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 units that compute bfloat16 natively
_KEYS = {
    "vendor_id": "vendor",
    "model name": "model_name",
    "Model": "model_name",  # ARM boards
    "Hardware": "model_name",
    "cpu family": "family",
    "model": "model",
    "stepping": "stepping",
}


def cpu_info(path: Path | None = None) -> dict[str, Any]:
    """The first processor's vendor, model name, family/model/stepping and flags (x86 ``flags``, ARM
    ``Features``); the model name falls back to platform's when /proc/cpuinfo cannot be read."""
    info: dict[str, Any] = {"vendor": "", "model_name": "", "family": None, "model": None, "stepping": None,
                            "flags": []}  # fmt: skip
    try:
        text = (path or CPUINFO).read_text(errors="replace")
    except OSError:
        return {**info, "model_name": platform.processor() or platform.machine()}
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key in _KEYS and not info[_KEYS[key]]:
            info[_KEYS[key]] = value
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = value.split()
        elif not key and info["flags"]:
            break  # the first processor's block is enough
    return info


def cpu_flags() -> set[str]:
    """The CPU's ISA flags; empty when unreadable."""
    return set(cpu_info()["flags"])


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU (or one with ``flags``) computes bfloat16 natively; elsewhere bf16 is emulated."""
    return bool(BF16_FLAGS & (cpu_flags() if flags is None else set(flags)))
