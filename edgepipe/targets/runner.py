"""Run a model on a target's own kernels: python, numpy and the runtime, nothing else (no torch, no edgepipe).

This file is executed as a script where the model will run: natively on the host, under qemu-user as another
CPU, or (later) copied to a device. It reads a bundle of inputs, runs the model in batches and writes the
logits and what it ran on; the caller scores them. Keep it stdlib + numpy + the runtime, and Python 3.9-safe:
a Raspberry Pi's own python runs it.

    python runner.py MODEL INPUTS.npy OUT_DIR [--runtime onnxruntime|openvino] [--threads N] [--batch B]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("out_dir")
    ap.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)

    import numpy as np

    x = np.load(args.inputs)
    load = _onnxruntime if args.runtime == "onnxruntime" else _openvino
    start = time.perf_counter()
    run, version = load(args.model, args.threads)
    outs = []
    for i in range(0, len(x), args.batch):
        chunk = np.ascontiguousarray(x[i : i + args.batch], dtype=np.float32)
        outs.append(np.asarray(run(chunk), dtype=np.float32))
    logits = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    seconds = time.perf_counter() - start
    os.makedirs(args.out_dir, exist_ok=True)
    tmp = os.path.join(args.out_dir, "logits.tmp.npy")
    np.save(tmp, logits)
    os.replace(tmp, os.path.join(args.out_dir, "logits.npy"))
    info = {
        "runtime": args.runtime,
        "runtime_version": version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": dict(_cpu_facts(), isa_seen=_isa_seen()),
        "images": int(len(x)),
        "seconds": seconds,  # wall time of this process: under emulation it is NOT a latency
    }
    with open(os.path.join(args.out_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
