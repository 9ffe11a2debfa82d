"""The CPUs a model ships to, by the names users know, and how each can be checked from this machine.

A target is a CPU family whose ONNX Runtime int8 kernels compute the same integers: the build host's numbers
hold only for CPUs in its own family. Each spec says which kernel path runs there and whether 8-bit weights
are exact on it; ``placement`` says how this machine can run that path: natively (the host is such a CPU),
emulated (qemu-user runs the runtime's own kernels for it: numerics only, never a latency), or not at all,
with the reason and the fix.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from edgepipe.constants import TARGET_NAMES
from edgepipe.errors import RecipeError

HOST = "host"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    arch: str  # platform.machine() of such a CPU
    title: str  # what users know it as
    kernel: str  # ONNX Runtime's u8 x s8 int8 GEMM/conv path there
    s8_saturates: bool  # products summed in int16 pairs (vpmaddubsw): 8-bit weights are not exact there
    emulator: str | None  # the qemu -cpu model whose kernels are this target's, or None


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec(
            "x86-64-v3", "x86_64", "AVX2 without VNNI: Haswell to Zen 3, many edge and industrial PCs",
            "AVX2 vpmaddubsw (u8 x s8 pairs summed in int16: exact for s7, saturates s8)", True, "Haswell",
        ),
        TargetSpec(
            "x86-64-v4", "x86_64", "AVX-512 VNNI: Cascade Lake and later Xeons, Zen 4/5",
            "AVX-512 VNNI vpdpbusd (int32 sums)", False, None,
        ),
        TargetSpec(
            "cortex-a72", "aarch64", "Cortex-A72: Raspberry Pi 4", "NEON umull/uadalp (int32 sums)", False,
            "cortex-a72",
        ),
        TargetSpec(
            "cortex-a76", "aarch64", "Cortex-A76: Raspberry Pi 5", "NEON udot (asimddp, int32 sums)", False,
            "cortex-a76",
        ),
    )
}
assert set(TARGETS) | {HOST} == set(TARGET_NAMES), "constants.TARGET_NAMES and the registry disagree"


def host_flags() -> set[str]:
    from edgepipe.cpu import cpu_flags

    return cpu_flags()


def host_target(flags: set[str] | None = None, machine: str | None = None) -> str | None:
    """The named target this machine is one of (its int8 kernels are that target's), or None."""
    flags = host_flags() if flags is None else flags
    machine = machine or platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return None  # an ARM host: which core (A72, A76, ...) is not told apart here
    if flags & {"avx512_vnni", "avx512vnni"}:
        return "x86-64-v4"
    if "avx2" in flags and not flags & {"avx_vnni", "amx_int8"}:
        return "x86-64-v3"
    return None


def host_spec(flags: set[str] | None = None) -> TargetSpec:
    """The host as a target: the named spec it matches, else its own (kernel path unknown to us)."""
    match = host_target(flags)
    if match is not None:
        s = TARGETS[match]
        return TargetSpec(HOST, s.arch, f"this machine ({match})", s.kernel, s.s8_saturates, None)
    flags = host_flags() if flags is None else flags
    vnni = bool(flags & {"avx_vnni", "amx_int8", "asimddp"})
    return TargetSpec(HOST, platform.machine(), "this machine", "native", not vnni and "avx2" in flags, None)


def default_root() -> Path:
    """Where scripts/install-targets.sh put the emulators' sysroots: $EDGEPIPE_TARGETS_DIR, else .targets/ in
    the checkout edgepipe runs from (the Makefile's editable install)."""
    import os

    env = os.environ.get("EDGEPIPE_TARGETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".targets"


@dataclass(frozen=True)
class Placement:
    """How a target runs from here: 'native', 'emulated' (command prefix) or 'not checked' (reason)."""

    target: TargetSpec
    how: str
    prefix: tuple[str, ...] = ()  # the command up to and including the python that runs ``runner.py ...``
    reason: str = ""

    @property
    def checked(self) -> bool:
        return self.how != "not checked"


def placement(name: str, root: Path | None = None, flags: set[str] | None = None) -> Placement:
    """How ``name`` can be checked on this machine (``root``: where install-targets put the sysroots)."""
    import sys

    from edgepipe.targets import emulation

    native = (sys.executable,)
    if name == HOST:
        return Placement(host_spec(flags), "native", native)
    spec = TARGETS[name]
    if host_target(flags) == name:
        return Placement(spec, "native", native)
    if spec.emulator is None:
        return Placement(spec, "not checked", reason=(
            f"needs a {spec.title} CPU (qemu-user has no AVX-512); fix: run edgepipe bench --target "
            f"{name} on one"))
    root = default_root() if root is None else root
    if spec.arch == "x86_64":
        if platform.machine() != "x86_64":
            return Placement(spec, "not checked", reason="x86-64 emulation is set up on x86-64 hosts only")
        why = emulation.x86_64_unavailable()
        if why:
            return Placement(spec, "not checked", reason=why)
        return Placement(spec, "emulated", prefix=tuple(emulation.x86_64_v3_command([])))
    why = emulation.aarch64_unavailable(root)
    if why:
        return Placement(spec, "not checked", reason=why)
    return Placement(spec, "emulated", prefix=tuple(emulation.aarch64_command(spec.emulator, [], root)))


def resolve(names: tuple[str, ...] | list[str] | None, root: Path | None = None) -> list[Placement]:
    """The targets a run checks: the named ones, or by default the host plus every target this machine can
    check that is not the host's own family (its numbers would repeat the host's)."""
    if names is not None:
        unknown = [n for n in names if n not in TARGET_NAMES]
        if unknown:
            raise RecipeError(
                f"unknown target {unknown[0]!r}; fix: use one of {', '.join(TARGET_NAMES)}"
            )
        return [placement(n, root) for n in dict.fromkeys(names)]
    own = host_target()
    chosen = [placement(HOST, root)]
    for name in TARGETS:
        if name == own:
            continue
        p = placement(name, root)
        if p.checked:
            chosen.append(p)
    return chosen
