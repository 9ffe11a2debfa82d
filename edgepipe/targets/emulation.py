"""Command lines that run a small torch-free script (python + numpy + onnxruntime) under qemu user-mode
emulation of the CPUs edgepipe targets, so ONNX Runtime's own kernels for *that* CPU compute an int8.onnx's
outputs on this machine. Numerics only: emulated timings mean nothing.

Why: ONNX Runtime picks its int8 kernels per CPU (x86 AVX2's vpmaddubsw saturates u8 x s8 pairs where AVX-512
VNNI and ARM's NEON/dot kernels do not), so outputs measured on the build machine are not a Raspberry Pi's.

aarch64 (Cortex-A72 = Raspberry Pi 4, Cortex-A76 = Raspberry Pi 5): ``scripts/install-targets.sh`` puts an
arm64 Debian python3.11 sysroot and the aarch64 numpy/onnxruntime wheels under ``<root>/aarch64``. ONNX
Runtime's cpuinfo reads /proc/cpuinfo and /sys/devices/system/cpu and crashes on the x86 host's; qemu's
``-L PREFIX`` serves a guest's open of an absolute path from PREFIX when the file exists there, so a per-CPU
prefix (symlinks to the sysroot plus proc/sys files written here from `AARCH64_CPUS`) shows each run the CPU
qemu emulates -- no mount namespace, no root. They must match ``-cpu``: ONNX Runtime's cpuinfo picks the
dot-product kernels from the MIDR's part number, so a Cortex-A72 shown an A76's MIDR dies of SIGILL.

x86-64-v3: ``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512/VNNI) runs the host's own python and onnxruntime.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AARCH64_CPUS",
    "X86_64_V3_CPU",
    "Aarch64Cpu",
    "Cache",
    "aarch64_command",
    "aarch64_prefix",
    "aarch64_unavailable",
    "x86_64_unavailable",
    "x86_64_v3_command",
]

INSTALL_FIX = "bash scripts/install-targets.sh"
# Haswell less the features qemu's TCG lacks (TSX, and system-only ones it would warn about on every thread).
X86_64_V3_CPU = "Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid"


@dataclass(frozen=True)
class Cache:
    """One /sys/devices/system/cpu/cpuN/cache/indexK entry."""

    level: int
    type: str  # "Data", "Instruction" or "Unified"
    size_kib: int
    ways: int
    shared: bool  # shared by every core (else private to one)
    line: int = 64


@dataclass(frozen=True)
class Aarch64Cpu:
    """What a real board's /proc/cpuinfo and /sys/devices/system/cpu show for this core."""

    board: str
    implementer: int
    part: int
    variant: int
    revision: int
    features: tuple[str, ...]
    min_khz: int
    max_khz: int
    caches: tuple[Cache, ...]

    @property
    def midr(self) -> int:
        """MIDR_EL1: implementer[31:24] variant[23:20] architecture[19:16]=0xf part[15:4] revision[3:0]."""
        return self.implementer << 24 | self.variant << 20 | 0xF << 16 | self.part << 4 | self.revision


# qemu's own models carry the same MIDRs (cortex-a72 0x410fd083, cortex-a76 0x414fd0b1).
AARCH64_CPUS: dict[str, Aarch64Cpu] = {
    # Raspberry Pi 4 (BCM2711): no crypto extension, no dot product, no LSE atomics.
    "cortex-a72": Aarch64Cpu(
        board="Raspberry Pi 4 Model B Rev 1.5",
        implementer=0x41,
        part=0xD08,
        variant=0x0,
        revision=3,
        features=tuple("fp asimd evtstrm crc32 cpuid".split()),
        min_khz=600_000,
        max_khz=1_800_000,
        caches=(
            Cache(1, "Data", 32, 2, shared=False),
            Cache(1, "Instruction", 48, 3, shared=False),
            Cache(2, "Unified", 1024, 16, shared=True),
        ),
    ),
    # Raspberry Pi 5 (BCM2712): ARMv8.2 with dot product (asimddp), LSE atomics, fp16.
    "cortex-a76": Aarch64Cpu(
        board="Raspberry Pi 5 Model B Rev 1.0",
        implementer=0x41,
        part=0xD0B,
        variant=0x4,
        revision=1,
        features=tuple(
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
            "asimddp".split()
        ),
        min_khz=1_500_000,
        max_khz=2_400_000,
        caches=(
            Cache(1, "Data", 64, 4, shared=False),
            Cache(1, "Instruction", 64, 4, shared=False),
            Cache(2, "Unified", 512, 8, shared=False),
            Cache(3, "Unified", 2048, 16, shared=True),
        ),
    ),
}


def _cpulist(cpus: range) -> str:
    return str(cpus.start) if len(cpus) == 1 else f"{cpus.start}-{cpus.stop - 1}"


def _cpumask(cpus: range) -> str:
    return format(sum(1 << c for c in cpus), "x")


def _cpuinfo(cpu: Aarch64Cpu, cores: int) -> str:
    blocks = [
        f"processor\t: {n}\n"
        "BogoMIPS\t: 108.00\n"
        f"Features\t: {' '.join(cpu.features)}\n"
        f"CPU implementer\t: 0x{cpu.implementer:02x}\n"
        "CPU architecture: 8\n"
        f"CPU variant\t: 0x{cpu.variant:x}\n"
        f"CPU part\t: 0x{cpu.part:03x}\n"
        f"CPU revision\t: {cpu.revision}\n"
        for n in range(cores)
    ]
    return "\n".join(blocks) + f"\nModel\t\t: {cpu.board}\n"


def _fake_files(cpu: Aarch64Cpu, cores: int) -> dict[str, str]:
    """Relative path -> contents of the proc/sys files ONNX Runtime's cpuinfo (and glibc's nproc) read."""
    every = range(cores)
    top = "sys/devices/system/cpu"
    files = {
        "proc/cpuinfo": _cpuinfo(cpu, cores),
        f"{top}/kernel_max": f"{cores - 1}\n",
        f"{top}/possible": f"{_cpulist(every)}\n",
        f"{top}/present": f"{_cpulist(every)}\n",
        f"{top}/online": f"{_cpulist(every)}\n",
        f"{top}/offline": "\n",
    }
    for n in every:
        d = f"{top}/cpu{n}"
        one = range(n, n + 1)
        files[f"{d}/online"] = "1\n"
        files[f"{d}/regs/identification/midr_el1"] = f"0x{cpu.midr:016x}\n"
        files[f"{d}/regs/identification/revidr_el1"] = f"0x{0:016x}\n"
        files[f"{d}/cpufreq/cpuinfo_min_freq"] = f"{cpu.min_khz}\n"
        files[f"{d}/cpufreq/cpuinfo_max_freq"] = f"{cpu.max_khz}\n"
        topo = {"physical_package_id": "0", "core_id": str(n), "cluster_id": "0"}
        for name, cpus in (("core_siblings", every), ("package_cpus", every), ("cluster_cpus", every),
                           ("thread_siblings", one), ("core_cpus", one)):  # fmt: skip
            topo[f"{name}_list"] = _cpulist(cpus)
            topo[name] = _cpumask(cpus)
        files.update({f"{d}/topology/{k}": f"{v}\n" for k, v in topo.items()})
        for i, c in enumerate(cpu.caches):
            shared = every if c.shared else one
            entry = {
                "level": str(c.level),
                "type": c.type,
                "size": f"{c.size_kib}K",
                "ways_of_associativity": str(c.ways),
                "coherency_line_size": str(c.line),
                "number_of_sets": str(c.size_kib * 1024 // (c.ways * c.line)),
                "shared_cpu_list": _cpulist(shared),
                "shared_cpu_map": _cpumask(shared),
            }
            files.update({f"{d}/cache/index{i}/{k}": f"{v}\n" for k, v in entry.items()})
    return files


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a concurrent run never reads a half-written file


def _symlink(path: Path, target: str) -> None:
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _sysroot(root: Path) -> Path:
    return root / "aarch64" / "sysroot"


def _site(root: Path) -> Path:
    return root / "aarch64" / "site"


def _fill_prefix(prefix: Path, sysroot: Path, files: dict[str, str]) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    for entry in sorted(sysroot.iterdir()):
        if entry.name not in ("proc", "sys") and not entry.name.startswith("."):
            _symlink(prefix / entry.name, str(entry))
    for rel, text in files.items():
        _write_if_changed(prefix / rel, text)


def aarch64_prefix(cpu: str, root: Path, cores: int = 2) -> Path:
    """The ``qemu-aarch64 -L`` prefix for ``cpu``: the sysroot's top-level entries as symlinks plus fake
    proc/cpuinfo and sys/devices/system/cpu written from `AARCH64_CPUS` (checked on every call, rewritten
    only when they differ). It lives in ``<root>/aarch64/cpu/``, or in a per-user temp dir when that is
    read-only."""
    if cpu not in AARCH64_CPUS:
        raise ValueError(f"unknown aarch64 cpu {cpu!r}; use one of {', '.join(AARCH64_CPUS)}")
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    root = Path(root).absolute()
    sysroot = _sysroot(root)
    if not (sysroot / "usr" / "bin" / "python3.11").is_file():
        raise FileNotFoundError(f"no aarch64 sysroot at {sysroot}; fix: {INSTALL_FIX}")
    files = _fake_files(AARCH64_CPUS[cpu], cores)
    name = f"{cpu}-{cores}c"
    prefix = root / "aarch64" / "cpu" / name
    try:
        _fill_prefix(prefix, sysroot, files)
    except PermissionError:  # someone else's install: keep ours beside the temp files, one per user and tree
        tag = format(zlib.crc32(str(root).encode()), "08x")
        prefix = Path(tempfile.gettempdir()) / f"edgepipe-targets-{os.getuid()}" / tag / name
        _fill_prefix(prefix, sysroot, files)
    return prefix


def aarch64_command(cpu: str, argv: list[str], root: Path, cores: int = 2) -> list[str]:
    """``python3 argv...`` (argv[0]: a script on the host) on an emulated ``cpu`` with ``cores`` cores, numpy
    and onnxruntime importable. ``root`` is install-targets' DEST (e.g. ``<repo>/.targets``). Writes the
    per-CPU prefix (see `aarch64_prefix`); needs no root and no namespaces. Host paths in argv: absolute or
    relative to the cwd, and not under the prefix's top-level names (/usr, /lib, /etc, /proc, /sys)."""
    root = Path(root).absolute()
    prefix = aarch64_prefix(cpu, root, cores)
    guest_env = {
        "PYTHONPATH": str(_site(root)),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # install-targets precompiled everything; keep the tree read-only
    }
    unset = ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
    return [
        shutil.which("qemu-aarch64") or "qemu-aarch64",
        "-cpu", cpu,
        "-L", str(prefix),
        *(a for k, v in guest_env.items() for a in ("-E", f"{k}={v}")),
        *(a for k in unset for a in ("-U", k)),
        str(prefix / "usr" / "bin" / "python3.11"),
        *argv,
    ]  # fmt: skip


def _dist_versions(site: Path, name: str) -> list[str]:
    return [p.name[len(name) + 1 : -len(".dist-info")] for p in site.glob(f"{name}-[0-9]*.dist-info")]


def aarch64_unavailable(root: Path) -> str | None:
    """None when `aarch64_command` can run, else a one-line reason naming the fix."""
    root = Path(root).absolute()
    if shutil.which("qemu-aarch64") is None:
        return f"qemu-aarch64 not found; fix: {INSTALL_FIX} (apt-get install qemu-user)"
    python = _sysroot(root) / "usr" / "bin" / "python3.11"
    if not python.is_file():
        return f"no aarch64 sysroot at {_sysroot(root)}; fix: {INSTALL_FIX}"
    site = _site(root)
    for name in ("numpy", "onnxruntime"):
        found = _dist_versions(site, name)
        if not found:
            return f"no aarch64 {name} in {site}; fix: {INSTALL_FIX}"
        try:
            from importlib.metadata import PackageNotFoundError, version

            host = version(name)
        except PackageNotFoundError:
            continue
        if host not in found:
            return f"aarch64 {name} {found[0]} != host {host}; fix: {INSTALL_FIX}"
    return None


def x86_64_v3_command(argv: list[str], python: str = sys.executable) -> list[str]:
    """``python argv...`` on an emulated Haswell (x86-64-v3: AVX2/FMA, no AVX-512, no VNNI); ``python`` is a
    host interpreter (its venv's onnxruntime is the one that runs)."""
    return [shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", X86_64_V3_CPU, python, *argv]


def x86_64_unavailable() -> str | None:
    """None when `x86_64_v3_command` can run, else a one-line reason naming the fix."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"host is {machine}, x86-64-v3 emulation runs the host's x86-64 python"
    if shutil.which("qemu-x86_64") is None:
        return f"qemu-x86_64 not found; fix: {INSTALL_FIX} (apt-get install qemu-user)"
    return None
