"""Run a model on each target's own kernels (targets/runner.py, natively or under qemu-user) and score it
against a reference: agreement with it and top-1. Numerics only: emulated wall time is never a latency."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.runtimes.registry import runtime_spec
from edgepipe.targets.registry import Placement, TargetSpec

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")


@dataclass
class TargetResult:
    """One target's verdict on one model: ``agreement`` a fraction (0..1), ``top1`` a % (None when not
    checked)."""

    target: str
    title: str
    how: str  # native | emulated | not checked | failed
    kernel: str
    runtime: str
    images: int = 0
    agreement: float | None = None
    top1: float | None = None
    reason: str = ""
    runtime_version: str | None = None
    cpu: dict = field(default_factory=dict)
    wall_s: float | None = None  # the check's own wall time (emulated: NOT a latency)

    def to_dict(self) -> dict:
        return asdict(self)


def _start(p: Placement, model: Path, inputs: Path, out: Path, runtime: str, threads: int):
    cmd = [*p.prefix, str(RUNNER), str(model), str(inputs), str(out), "--runtime", runtime,
           "--threads", str(threads)]  # fmt: skip
    log.debug("target %s: %s", p.target.name, " ".join(cmd))
    err = open(out.with_suffix(".stderr"), "w")  # noqa: SIM115 - closed in _finish
    return subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), err


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def kernel_name(runtime: str, target: TargetSpec) -> str:
    """The int8 kernels ``runtime`` runs on ``target``: its own (RuntimeSpec.target_kernel), else the target's
    (TargetSpec.kernel: those of the runtime that runs every .onnx)."""
    return runtime_spec(runtime).target_kernel or target.kernel


def check_targets(
    jobs: list[tuple[Path, str, list[Placement]]],
    x: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray | None,
    timeout_s: float = 900.0,
    threads: int = 1,
) -> list[TargetResult]:
    """Each job (model file, runtime, placements) runs on ``x`` on each of its placements, all at once (one
    process each; single-threaded so emulated ones share the cores); each result scores the target's logits
    against ``reference`` logits, in job then placement order."""
    from edgepipe.train.metrics import agreement

    results: dict[tuple[str, str], TargetResult] = {}
    ref_pred = reference.argmax(1)
    with tempfile.TemporaryDirectory(prefix="edgepipe-targets-") as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, np.ascontiguousarray(x, dtype=np.float32))
        running = {}
        for model, runtime, placements in jobs:
            for p in placements:
                t = p.target
                kernel = kernel_name(runtime, t)
                result = TargetResult(t.name, t.title, p.how, kernel, runtime, reason=p.reason)
                results[runtime, t.name] = result
                if not p.checked:
                    continue
                out = Path(tmp) / f"{runtime}-{t.name}"
                started = time.perf_counter()
                running[runtime, t.name] = (*_start(p, model, inputs, out, runtime, threads), out, started)
        try:
            deadline = time.perf_counter() + timeout_s
            for key, (proc, err, out, started) in running.items():
                r = results[key]
                try:
                    proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    r.how, r.reason = "failed", f"timed out after {timeout_s:.0f} s"
                    continue
                finally:
                    err.close()
                r.wall_s = time.perf_counter() - started
                logits_path = out / "logits.npy"
                if proc.returncode != 0 or not logits_path.is_file():
                    detail = _last_line(out.with_suffix(".stderr")) or f"exit status {proc.returncode}"
                    r.how, r.reason = "failed", f"the runner failed ({detail})"
                    continue
                logits = np.load(logits_path)
                info = json.loads((out / "info.json").read_text())
                r.images, r.runtime_version = len(logits), info.get("runtime_version")
                r.cpu = info.get("cpu", {})
                pred = logits.argmax(1)
                r.agreement = agreement(pred, ref_pred)
                if labels is not None:
                    r.top1 = 100.0 * float((pred == labels).mean())
                log.info("target %s, %s (%s): agrees with the reference on %.2f%% of %d images",
                         r.target, r.runtime, r.how, 100 * r.agreement, r.images)  # fmt: skip
        finally:  # Ctrl-C or an error: no emulator outlives the check
            for proc, err, _out, _t in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err.close()
    return list(results.values())

