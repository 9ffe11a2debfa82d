"""Bench models on a real device over SSH: the same torch-free runner the emulated targets use, copied there.

A bundle (the .onnx files, the eval-preprocessed images, runner.py and a job file) goes to a ``mktemp -d``
folder on the device; the runner measures each model in its own process (cold first inference, warm-up,
percentiles, peak RSS, then logits on the images), then times them again in alternating rounds; the logits
come back and are scored here against the host's reference. The remote folder is removed at the end, on error
and on Ctrl-C. Rows are :class:`DeviceResult`: the document's ``targets`` entries with ``how: device``.
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import DeviceError
from edgepipe.runtimes.registry import runtime_for
from edgepipe.targets.check import RUNNER, TargetResult
from edgepipe.targets.ssh import (
    Device,
    SshSession,
    fingerprint,
    model_opset,
    parse_device,
    probe,
    quote_path,
    runtime_too_old,
    title,
)

log = logging.getLogger(__name__)

KERNEL = "native"  # the device's own kernels of the runtime that runs every .onnx: the numbers are that CPU's


@dataclass
class DeviceModel:
    """One .onnx to bench on the device, the images it is fed and what its logits are scored against."""

    name: str
    path: Path
    x: np.ndarray  # eval-preprocessed images, float32 NCHW
    reference: np.ndarray  # the host's reference logits (or one-hot of a reference's predictions)
    labels: np.ndarray | None = None  # class index per image in this model's outputs


@dataclass
class DeviceTiming:
    warmup: int = 20
    min_iters: int = 100
    min_seconds: float = 2.0
    rounds: int = 15  # alternating paired rounds (0: off)
    round_iters: int = 20
    threads: int = 2
    timeout_s: float = 900.0


@dataclass
class DeviceResult(TargetResult):
    """A model benched on a device: a targets entry with the device's latency, memory and paired speed-up."""

    latency_ms: float | None = None  # p50, batch 1
    latency: dict[str, Any] | None = None  # the Latency of a bench row (round_medians_ms: the paired rounds)
    peak_rss_mb: float | None = None
    speedup_paired: float | None = None  # vs the first model on the same device, per round, median


def _paired(base: list[float] | None, row: list[float] | None) -> float | None:
    from edgepipe.bench.harness import paired_ratio

    return paired_ratio(base, row)


def _check_opsets(device: Device, facts: dict, models: list[DeviceModel]) -> None:
    package = runtime_for("onnx").package  # what runs the models there (probe() reads its version)
    for m in models:
        opset = model_opset(m.path)
        newest = runtime_too_old(facts[package], opset) if opset else None
        if newest is not None:
            upgrade = device.pip_fix().replace("install", "install -U", 1)
            raise DeviceError(
                f"{device.spec}: {package} {facts[package]} on the device runs ONNX opset <= "
                f"{newest}, {m.name} is opset {opset}; fix: {upgrade}, or export with opset {newest} "
                "(export.opset)"
            )


def _bundle(tmp: Path, models: list[DeviceModel], t: DeviceTiming) -> list[Path]:
    """The files to copy (models as links: no copy of a big model here) and the job file that names them."""
    files, job_models, inputs = [RUNNER], [], {}
    runtime = runtime_for("onnx").name  # what runs each .onnx on the device
    for i, m in enumerate(models):
        key = (m.x.shape, m.x.dtype.str, hash(m.x.tobytes()))  # int8 and fp32 of one model share their images
        if key not in inputs:
            inputs[key] = tmp / f"inputs{len(inputs)}.npy"
            np.save(inputs[key], np.ascontiguousarray(m.x, dtype=np.float32))
            files.append(inputs[key])
        link = tmp / f"model{i}.onnx"
        link.symlink_to(Path(m.path).resolve())  # scp copies what a link names
        files.append(link)
        job_models.append({"path": link.name, "inputs": inputs[key].name, "runtime": runtime})
    job = {
        "models": job_models,
        "out_dir": "out",
        "threads": t.threads,
        "batch": 64,
        "time": {"warmup": t.warmup, "min_iters": t.min_iters, "min_seconds": t.min_seconds},
        "rounds": t.rounds,
        "round_iters": t.round_iters,
    }
    (tmp / "job.json").write_text(json.dumps(job, indent=2))
    files.append(tmp / "job.json")
    return files


def _runner_failed(device: Device, code: int, stderr: str, timeout_s: float) -> DeviceError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else f"exit status {code}"
    if code in (124, 137):  # coreutils timeout: TERM, then KILL
        return DeviceError(
            f"{device.spec}: the device run passed its timeout of {timeout_s:.0f} s; fix: give it more "
            "(--device-timeout), or fewer --device-images / a smaller --min-seconds"
        )
    if "opset" in stderr.lower() or "ir version" in stderr.lower():
        return DeviceError(f"{device.spec}: the device's onnxruntime cannot load the model ({last}); fix: "
                           f"{device.pip_fix().replace('install', 'install -U', 1)}")  # fmt: skip
    return DeviceError(
        f"{device.spec}: the runner failed on the device ({last}); fix: run it again with -v, or check the "
        "device's free memory and disk"
    )


def bench_on_device(spec: str, models: list[DeviceModel], timing: DeviceTiming) -> list[DeviceResult]:
    """Every model on the device ``spec`` (``ssh://...``): one DeviceResult each, in order. Any failure is a
    one-line DeviceError; nothing is left on the device either way."""
    from edgepipe.train.metrics import agreement

    device = parse_device(spec)
    started = time.perf_counter()
    with SshSession(device) as s, tempfile.TemporaryDirectory(prefix="edgepipe-device-") as tmp_name:
        tmp = Path(tmp_name)
        facts = probe(s)
        package = runtime_for("onnx").package
        log.info("device %s: %s, python %s, %s %s", spec, title(facts), facts["python"], package,
                 facts[package])  # fmt: skip
        _check_opsets(device, facts, models)
        files = _bundle(tmp, models, timing)
        made = s.run('mktemp -d "${TMPDIR:-/tmp}/edgepipe-bench.XXXXXX"', timeout=60)
        remote = made.stdout.decode().strip()
        if made.returncode != 0 or not remote.startswith("/"):
            err = made.stderr.decode(errors="replace").strip()
            raise DeviceError(
                f"{spec}: cannot make a temp folder on the device ({err[:200]}); fix: check its /tmp (free "
                "space, permissions) or set TMPDIR there"
            )
        finished = False
        try:
            s.put(files, remote)
            q, py = shlex.quote(remote), quote_path(device.python)
            n = int(timing.timeout_s)
            run = f"{py} runner.py --job job.json"
            command = (f"cd {q} && echo $$ > pid && if command -v timeout >/dev/null 2>&1; then "
                       f"exec timeout -k 10 {n} {run}; else exec {run}; fi")  # fmt: skip
            log.info("device %s: benching %d model(s) (timeout %d s)", spec, len(models), n)
            done = s.run(command, timeout=timing.timeout_s + 60)
            if done.returncode != 0:
                raise _runner_failed(device, done.returncode, done.stderr.decode(errors="replace"),
                                     timing.timeout_s)  # fmt: skip
            finished = True
            s.get(f"{remote}/out", tmp)
        finally:  # errors and Ctrl-C too: stop the runner if it still runs, remove the folder
            kill = "" if finished else f"[ -f {q}/pid ] && kill -TERM -- -$(cat {q}/pid) 2>/dev/null; "
            try:
                s.run(f"{kill}rm -rf {q}", timeout=60)
            except DeviceError as exc:
                log.warning("device %s: could not remove %s there: %s", spec, remote, exc)
        results = _score(device, dict(facts, python_path=device.python), models, tmp / "out", agreement)
    wall = time.perf_counter() - started
    for r in results:
        r.wall_s = wall
    return results


def _score(
    device: Device, facts: dict, models: list[DeviceModel], out: Path, agreement
) -> list[DeviceResult]:
    rounds = None
    if (out / "rounds.json").is_file():
        rounds = json.loads((out / "rounds.json").read_text())["medians_ms"]
    results = []
    for i, m in enumerate(models):
        info = json.loads((out / str(i) / "info.json").read_text())
        logits = np.load(out / str(i) / "logits.npy")
        pred = logits.argmax(1)
        latency = dict(info["latency"])
        if rounds is not None:
            latency["round_medians_ms"] = rounds[i]
        r = DeviceResult(
            target=device.name,
            title=title(facts),
            how="device",
            kernel=KERNEL,
            runtime=runtime_for("onnx").name,
            images=int(len(logits)),
            agreement=agreement(pred, m.reference.argmax(1)),
            top1=None if m.labels is None else 100.0 * float((pred == m.labels).mean()),
            runtime_version=info.get("runtime_version"),
            cpu=dict(fingerprint(facts), isa_seen=info.get("cpu", {}).get("isa_seen", [])),
            latency_ms=latency["p50_ms"],
            latency=latency,
            peak_rss_mb=info.get("peak_rss_mb"),
            speedup_paired=_paired(rounds[0], rounds[i]) if rounds is not None else None,
        )
        log.info("device %s: %s p50 %.3f ms (p99 %.3f, cold %.1f), peak RSS %s MB, agrees on %.2f%% of %d",
                 device.name, m.name, latency["p50_ms"], latency["p99_ms"], latency["cold_ms"], r.peak_rss_mb,
                 100 * r.agreement, r.images)  # fmt: skip
        results.append(r)
    return results
