"""Run a model on a target's own kernels: python, numpy and the runtime, nothing else (no torch, no edgepipe).

This file is executed as a script where the model will run: natively on the host, under qemu-user as another
CPU, or copied to a device over SSH (edgepipe/targets/ssh.py). It reads a bundle of inputs, runs the model in
batches and writes the logits and what it ran on; the caller scores them. Keep it stdlib + numpy + the
runtime, and Python 3.9-safe: a Raspberry Pi's own python runs it. It cannot read edgepipe.runtimes.registry,
so the runtimes it can run are spelled here (``--runtime``).

    python runner.py MODEL INPUTS.npy OUT_DIR [--runtime onnxruntime|openvino] [--threads N] [--batch B]
                     [--time [--warmup W] [--min-iters N] [--min-seconds S]]
    python runner.py --job JOB.json

``--time`` also times batch-1 inference (a fresh session's first run as cold, then warm-up, then at least N
runs and S seconds) and reports the process's peak RSS before the logits pass. ``--job`` (a device bench)
measures several models, each in its own child process (so cold and peak RSS are that model's alone), then
times them again in alternating rounds in one process, so the host can pair them per round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time


def _cpu_facts() -> dict:
    """What /proc/cpuinfo says (under qemu-user: the emulated CPU's, where the caller fakes it)."""
    facts = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            text = f.read()
    except OSError:
        return facts
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "CPU part", "CPU implementer") and key not in facts:
            facts[key] = value.strip()
        elif key in ("flags", "Features") and "features" not in facts:
            facts["features"] = value.split()
    return facts


def _isa_seen() -> list:
    """The ISA extensions this process's CPUID/HWCAP report (numpy's dispatch table): under qemu-user these
    are the emulated CPU's, where /proc/cpuinfo may still be the host's."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return []
    keep = ("AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AVX512BF16", "AVXVNNI", "ASIMD", "ASIMDDP", "ASIMDHP",
            "NEON")  # numpy's names  # fmt: skip
    return [k for k in keep if feats.get(k)]


def _onnxruntime(model: str, threads: int):
    import onnxruntime as ort

    def session(disabled=()):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(
            model, sess_options=opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled)
        )

    sess = session()
    # an INT8 model with layers kept in float asks for optimizers off in its metadata (as edgepipe's loader)
    asked = sess.get_modelmeta().custom_metadata_map.get("ort_disabled_optimizers")
    if asked:
        sess = session(json.loads(asked))
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})[0]), ort.__version__


def _openvino(model: str, threads: int):
    import openvino as ov

    core = ov.Core()
    net = core.read_model(model)
    shape = net.input(0).get_partial_shape()
    shape[0] = -1  # edgepipe's IRs are saved with batch 1 (what a plain compile_model runs fastest)
    net.reshape(shape)
    compiled = core.compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": threads})
    return (lambda x: compiled(x)[0]), ov.__version__


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


def _load(model: str, runtime: str, threads: int):
    return (_onnxruntime if runtime == "onnxruntime" else _openvino)(model, threads)


def _latency(run, x1, warmup: int, min_iters: int, min_seconds: float) -> dict:
    """Batch-1 latency as edgepipe.bench.timing.time_callable reports it: the first call apart as cold (it
    counts as one warm-up call), then at least ``min_iters`` calls and ``min_seconds`` of measured time."""
    import numpy as np

    start = time.perf_counter()
    run(x1)
    cold_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup - 1):
        run(x1)
    samples, measured = [], 0.0
    while len(samples) < min_iters or measured < min_seconds:
        start = time.perf_counter()
        run(x1)
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        measured += elapsed
    ms = np.asarray(samples) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean = float(ms.mean())
    return {
        "cold_ms": cold_ms, "iters": int(len(ms)), "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "min_ms": float(ms.min()), "throughput_ips": 1000.0 / mean if mean > 0 else float("inf"),
        "batch_size": 1,
    }  # fmt: skip


def measure(model: str, inputs: str, out_dir: str, runtime: str, threads: int, batch: int,
            timing: dict = None) -> None:  # fmt: skip
    """One model: (``timing``) cold, warm and peak RSS at batch 1, then logits on every input, into
    ``out_dir``/logits.npy and info.json. The inputs are memory-mapped and read only after the timing, so
    the peak RSS is the model's, not the bundle's."""
    import numpy as np

    x = np.load(inputs, mmap_mode="r")
    info = {}
    if timing is not None:
        info["rss_before_mb"] = round(_maxrss_mb(), 1)
    start = time.perf_counter()
    run, version = _load(model, runtime, threads)
    load_ms = (time.perf_counter() - start) * 1e3
    if timing is not None:
        x1 = np.ascontiguousarray(x[:1], dtype=np.float32)
        info["load_ms"] = load_ms
        info["latency"] = _latency(run, x1, int(timing["warmup"]), int(timing["min_iters"]),
                                   float(timing["min_seconds"]))  # fmt: skip
        info["peak_rss_mb"] = round(_maxrss_mb(), 1)
        info["memory_method"] = "ru_maxrss of a process that loaded and timed this model only"
    outs = []
    for i in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[i : i + batch], dtype=np.float32)
        outs.append(np.asarray(run(chunk), dtype=np.float32))
    logits = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    seconds = time.perf_counter() - start
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "logits.tmp.npy")
    np.save(tmp, logits)
    os.replace(tmp, os.path.join(out_dir, "logits.npy"))
    info = {
        "runtime": runtime,
        "runtime_version": version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": dict(_cpu_facts(), isa_seen=_isa_seen()),
        "images": int(len(x)),
        "seconds": seconds,  # wall time of this process: under emulation it is NOT a latency
        **info,
    }
    _write_json(os.path.join(out_dir, "info.json"), info)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def rounds(models: list, threads: int, n_rounds: int, iters: int, warmup: int) -> list:
    """Every model loaded in this process and timed again in ``n_rounds`` rounds of ``iters`` batch-1 calls
    each (order shuffled per round, seeded), as edgepipe.bench.harness.alternating_rounds: the per-round
    medians (ms) let the host take speed-up ratios within each round, where drift of the device cancels."""
    import numpy as np

    loaded = []
    for m in models:
        run, _ = _load(m["path"], m.get("runtime", "onnxruntime"), threads)
        x1 = np.ascontiguousarray(np.load(m["inputs"], mmap_mode="r")[:1], dtype=np.float32)
        for _ in range(warmup):
            run(x1)
        loaded.append((run, x1))
    medians = [[] for _ in models]
    order = list(range(len(models)))
    for r in range(n_rounds):
        random.Random(r).shuffle(order)
        for k in order:
            run, x1 = loaded[k]
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                run(x1)
                times.append((time.perf_counter() - start) * 1e3)
            medians[k].append(float(np.median(times)))
    return medians


def run_job(path: str, only=None) -> int:
    """A device bench (see the module docstring); paths in the job are relative to the job file's folder."""
    with open(path) as f:
        job = json.load(f)
    base = os.path.dirname(os.path.abspath(path))
    models = [dict(m, path=os.path.join(base, m["path"]), inputs=os.path.join(base, m["inputs"]))
              for m in job["models"]]  # fmt: skip
    out = os.path.join(base, job.get("out_dir", "out"))
    threads, batch = int(job.get("threads", 1)), int(job.get("batch", 64))
    timing = job.get("time")
    if only is not None:
        m = models[only]
        measure(m["path"], m["inputs"], os.path.join(out, str(only)), m.get("runtime", "onnxruntime"),
                threads, batch, timing)  # fmt: skip
        return 0
    for i in range(len(models)):  # a fresh process per model: its cold start and peak RSS are its own
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--job", path, "--only", str(i)])
        if done.returncode != 0:
            return done.returncode
    n_rounds = int(job.get("rounds") or 0)
    if n_rounds and len(models) > 1:
        warmup = int((timing or {}).get("warmup", 5))
        medians = rounds(models, threads, n_rounds, int(job.get("round_iters", 20)), warmup)
        _write_json(os.path.join(out, "rounds.json"), {"rounds": n_rounds, "medians_ms": medians})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("inputs", nargs="?")
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--time", action="store_true", help="also time batch-1 inference and the peak RSS")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--min-iters", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--job", help="a device bench's job file (several models, alternating rounds)")
    ap.add_argument("--only", type=int, help=argparse.SUPPRESS)  # --job: measure this model only
    args = ap.parse_args(argv)
    if args.job:
        return run_job(args.job, args.only)
    if not (args.model and args.inputs and args.out_dir):
        ap.error("give MODEL INPUTS.npy OUT_DIR, or --job JOB.json")
    timing = None
    if args.time:
        timing = {"warmup": args.warmup, "min_iters": args.min_iters, "min_seconds": args.min_seconds}
    measure(args.model, args.inputs, args.out_dir, args.runtime, args.threads, args.batch, timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
