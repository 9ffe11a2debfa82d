"""qat.numerics s8 vs s7 vs u8u8: is the INT8 model right on every target CPU's own kernels, and what does
each cost? One full `edgepipe build` per base recipe and numerics, then one table per model.

On x86 without VNNI (AVX2: Haswell to Zen 3) ONNX Runtime's u8 x s8 kernels sum products in int16 pairs
(vpmaddubsw), which saturate for full 8-bit weights: an s8 model computes other integers there than on VNNI
x86 or ARM. s7 trains 7-bit weights (exact on every kernel); u8u8 ships the s8 model with uint8 weights (zero
point 128) for ONNX Runtime's U8U8 kernels. Each variant is derived from its base recipe (name
``<name>_<numerics>``, ``qat.numerics`` set, no ``stages`` key: the whole pipeline) with
``export.min_agreement: 0.0`` so the s8 model, which the default gate stops on x86-64-v3, still reaches bench;
the table says what the default 0.99 gate would have said. Builds go to --out with the build cache on: runs
whose finetune/qat already exist there (same recipe slice) skip them, and a u8u8 run gets the s8 run's split/
and finetune/ copied in first, so only its QAT trains.

Per variant: FP32 top-1 (ONNX Runtime, host), the QAT torch model's top-1, ONNX Runtime INT8 top-1 on the
host (whole test split), agreement with the QAT torch model and top-1 per target (the export stage's checks
of int8.onnx on each CPU's own kernels: host natively, x86-64-v3 under qemu Haswell, Cortex-A72/A76 under
qemu-aarch64; OpenVINO on the host over the whole test split), the bench stage's INT8 ONNX Runtime p50 and
speed-up over the fastest float (p50 ratio and paired per round), size, and the default gate per target.

Then, as a proxy for the AVX2 kernels' cost (no AVX2-only CPU here; emulated time is not a latency),
instructions per batch-1 inference under valgrind (callgrind), whose synthetic CPUID is a Haswell's (AVX2,
no AVX-512): checked by numpy's CPU feature table under valgrind and by int8.onnx's logits under valgrind
equalling those under qemu Haswell. Instruction counts, not latencies.

    .venv/bin/python benchmarks/int8_numerics.py [--out /work/runs/art] [--bases recipes/mnv3_qat.yaml ...]
    .venv/bin/python benchmarks/int8_numerics.py --skip-build      # tables from finished runs
    .venv/bin/python benchmarks/int8_numerics.py --render          # the .md (and .png) from the .json only

Writes benchmarks/results/int8_numerics_<cpu>.{json,md,png} (<cpu> as bench.timing.cpu_name() names it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
log = logging.getLogger("int8_numerics")

NUMERICS = ("s8", "s7", "u8u8")
BASES = ("recipes/mnv3_qat.yaml", "recipes/efficientnet_lite0_fashion.yaml")
TARGETS = ("host", "x86-64-v3", "cortex-a72", "cortex-a76")
OPENVINO = "openvino (host)"
GATE = 0.99  # the recipes' export.min_agreement
SCHEMA = "edgepipe.int8_numerics/2"  # bumped whenever a key is renamed, removed or changes meaning


# ------------------------------------------------------------------------------------------------ recipes
def derive(base: dict, numerics: str) -> dict:
    """The base recipe (parsed YAML) as one numerics variant: renamed, qat.numerics set, the export gate off
    (min_agreement 0.0: every variant reaches bench), every stage run."""
    out = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    out["name"] = f"{base['name']}_{numerics}"
    out.pop("stages", None)
    out.setdefault("qat", {})["numerics"] = numerics
    out.setdefault("export", {})["min_agreement"] = 0.0
    return out


def seed_u8u8(out: Path, base_name: str) -> list[str]:
    """Copy the s8 run's split/ and finetune/ into the u8u8 run (the same float model; only QAT trains),
    unless the u8u8 run has them already. Returns the folders copied."""
    src, dst = out / f"{base_name}_s8", out / f"{base_name}_u8u8"
    copied = []
    for stage in ("split", "finetune"):
        if (src / stage / "manifest.json").is_file() and not (dst / stage / "manifest.json").exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dst / stage, ignore_errors=True)
            shutil.copytree(src / stage, dst / stage)
            copied.append(stage)
    return copied


STAGE_LINE = re.compile(r"stage\s+(\w+)\s+(cached|reused from|running)")


def stages_from_log(text: str) -> dict[str, str]:
    """What the build log says each stage did: cached, reused from another run, or running."""
    seen: dict[str, str] = {}
    for name, what in STAGE_LINE.findall(text):
        seen.setdefault(name, what)
    return seen


def edgepipe_command() -> list[str]:
    exe = Path(sys.executable).with_name("edgepipe")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "edgepipe.cli"]


def build(recipe_file: Path, out: Path, log_file: Path) -> dict:
    """`edgepipe build RECIPE --out OUT` (the build cache on), its output to log_file."""
    cmd = [*edgepipe_command(), "build", str(recipe_file), "--out", str(out)]
    env = {**os.environ, "EDGEPIPE_PROGRESS": "0", "COLUMNS": "200"}
    log.info("$ %s", " ".join(cmd))
    t0 = time.perf_counter()
    with open(log_file, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = log_file.read_text(errors="replace")
    result = {"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1), "log": str(log_file),
              "log_stages": stages_from_log(text)}  # fmt: skip
    if rc != 0:
        result["error"] = "\n".join(text.strip().splitlines()[-5:])[-1500:]
    log.info("  exit %d after %.1f min; stages: %s", rc, wall / 60, result["log_stages"])
    return result


# ------------------------------------------------------------------------------------------------ tables
def gate(export_metrics: dict, threshold: float = GATE) -> dict:
    """What export's gate says at ``threshold``: ONNX Runtime and OpenVINO vs torch on the host (both models,
    whole test split), then int8.onnx on every checked target. Targets not checked neither pass nor fail."""
    fails, checked = [], []
    for key in ("fp32", "int8"):
        m = export_metrics.get(key) or {}
        for a, label in (("ort_agreement", "onnxruntime (host)"), ("openvino_agreement", OPENVINO)):
            if m.get(a) is None:
                continue
            checked.append(f"{key} {label}")
            if m[a] < threshold:
                fails.append({"model": key, "check": label, "agreement": m[a]})
        if key != "int8":
            continue
        for t in m.get("targets") or ():
            if t.get("agreement") is None:
                continue
            checked.append(f"{key} {target_key(t)}")
            if t["agreement"] < threshold:
                fails.append({"model": key, "check": target_key(t), "agreement": t["agreement"]})
    return {"min_agreement": threshold, "passed": not fails, "failures": fails, "checked": checked}


def target_key(t: dict) -> str:
    """A target check's column: the target for ONNX Runtime (int8.onnx), '<target> (<runtime>)' otherwise."""
    runtime = t.get("runtime") or "onnxruntime"
    return t["target"] if runtime == "onnxruntime" else f"{t['target']} ({runtime})"


def _row(rows: list[dict], model: str, runtime: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["runtime"] == runtime), None)


def collect(report: dict) -> dict:
    """One variant's numbers from its run's report.json (the bench document with every stage's metrics)."""
    stages = report.get("stages") or {}
    exp = stages.get("export", {}).get("metrics", {})
    fp, q = exp.get("fp32", {}), exp.get("int8", {})
    rows = report.get("rows") or []
    targets = {}
    for t in q.get("targets") or ():
        keep = ("runtime", "how", "kernel", "images", "agreement", "top1", "reason", "title")
        targets[target_key(t)] = {k: t.get(k) for k in (*keep, "runtime_version")}
    if q.get("openvino_agreement") is not None:
        targets[OPENVINO] = {
            "how": "native", "kernel": f"OpenVINO, precision {q.get('openvino_precision')}",
            "images": q.get("test_images"), "agreement": q["openvino_agreement"],
            "top1": q.get("openvino_test_top1"), "reason": "",
        }  # fmt: skip
    int8 = _row(rows, "int8-qat", "onnxruntime")
    fp32 = _row(rows, "fp32", "onnxruntime")
    ov8 = _row(rows, "int8-qat", "openvino")

    def timing(r: dict | None) -> dict | None:
        if r is None:
            return None
        b = r.get("baseline") or {}
        return {"p50_ms": r["latency"]["p50_ms"], "speedup": r.get("speedup"),
                "speedup_paired": r.get("speedup_paired"), "size_mb": r.get("size_mb"), "top1": r.get("top1"),
                "baseline": b.get("runtime_label"), "runtime_label": r.get("runtime_label")}  # fmt: skip

    return {
        "numerics": q.get("numerics"),
        "test_images": q.get("test_images"),
        "fp32_ort_top1": fp.get("ort_test_top1"),
        "qat_torch_top1": q.get("torch_test_top1"),
        "targets_fp32_top1": q.get("targets_fp32_top1"),  # FP32 on the targets' sample
        "int8_ort_top1": q.get("ort_test_top1"),
        "int8_ort_agreement": q.get("ort_agreement"),
        "targets": targets,
        "int8_onnxruntime": timing(int8),
        "fp32_onnxruntime": timing(fp32),
        "int8_openvino": timing(ov8),
        "gate": gate(exp),
        "sha256": {m["name"]: m.get("sha256") for m in report.get("models") or ()},
        "stage_wall_s": {k: v.get("wall_time_s") for k, v in stages.items()},
        "stage_cached": {k: v.get("cached") for k, v in stages.items()},
    }


def auto_notes(results: dict) -> list[str]:
    """What the runs themselves show about how they were built: the float model shared by every numerics,
    and which stages each build took from the cache."""
    notes = []
    for m in results["models"]:
        ok = [v for v in m["variants"] if "error" not in v]
        fp = {v.get("sha256", {}).get("fp32") for v in ok} - {None}
        if len(fp) == 1 and len(ok) > 1:
            notes.append(f"{m['name']}: every numerics ships the same fp32.onnx (sha256 {fp.pop()[:12]}): "
                         "one fine-tuned float model, only QAT and export differ.")  # fmt: skip
        elif len(fp) > 1:
            notes.append(f"{m['name']}: the numerics' fp32.onnx files differ (not one float model).")
        for v in m["variants"]:
            logged = (v.get("build") or {}).get("log_stages") or {}
            if not logged:
                continue
            took = [s for s in ("split", "finetune", "qat") if logged.get(s) in ("cached", "reused from")]
            ran = [s for s, w in logged.items() if w == "running"]
            notes.append(f"{m['name']}_{v['numerics']}: the build log says {', '.join(took) or 'nothing'} "
                         f"cached; ran {', '.join(ran) or 'nothing'}.")  # fmt: skip
    return notes


def _f(v: Any, nd: int = 2, suffix: str = "") -> str:
    return "—" if v is None else f"{v:.{nd}f}{suffix}"


def _pct(fraction: float | None) -> float | None:
    """An agreement (a fraction, 0..1, in the JSON) as the percentage tables and the plot show."""
    return None if fraction is None else 100 * fraction


def _target_cell(t: dict | None) -> str:
    if t is None:
        return "—"
    if t.get("agreement") is None:
        return str(t.get("how"))  # not checked / failed: the reason is in the JSON
    mark = "" if t["agreement"] >= GATE else " ✗"
    return f"{_pct(t['agreement']):.2f}{mark} / {_f(t.get('top1'))}"


def _gate_cell(g: dict) -> str:
    if g["passed"]:
        return "pass"
    return "FAIL: " + ", ".join(f"{f['check']} {_pct(f['agreement']):.2f}%" for f in g["failures"])


def columns(variants: list[dict]) -> list[str]:
    """The target columns: TARGETS in order, then any other checked one, OpenVINO last."""
    seen = [t for v in variants for t in v.get("targets", {})]
    extra = [t for t in dict.fromkeys(seen) if t not in TARGETS and t != OPENVINO]
    return [*TARGETS, *extra, OPENVINO]


def model_table(model: dict) -> list[str]:
    """One model's table: a row per numerics."""
    variants = [v for v in model["variants"] if "error" not in v]
    cols = columns(variants)
    head = ["numerics", "FP32 top-1 (ORT, host)", "QAT torch top-1", "INT8 top-1 (ORT, host, all)",
            *(f"{c}: agree / top-1 %" for c in cols), "INT8 ORT p50 ms", "speed-up (p50 / paired)",
            "INT8 MB", "gate 0.99"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        t = v.get("int8_onnxruntime") or {}
        base = f" vs fp32 {t['baseline']}" if t.get("baseline") else ""
        speed = f"{_f(t.get('speedup'))}x / {_f(t.get('speedup_paired'))}x{base}" if t else "—"
        cells = [f"**{v['numerics']}**", _f(v.get("fp32_ort_top1")), _f(v.get("qat_torch_top1")),
                 f"{_f(v.get('int8_ort_top1'))} ({_f(_pct(v.get('int8_ort_agreement')))}% agree)",
                 *(_target_cell(v["targets"].get(c)) for c in cols), _f(t.get("p50_ms"), 3), speed,
                 _f(t.get("size_mb")), _gate_cell(v["gate"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for v in model["variants"]:
        if "error" in v:
            lines.append(f"\n**{v['numerics']}: the build failed** (exit {v['build']['rc']}): `{v['error']}`")
    return lines


def valgrind_lines(vg: dict | None) -> list[str]:
    if not vg:
        return []
    out = ["## AVX2 kernel path, instruction count (not a latency)", ""]
    if vg.get("skipped"):
        return [*out, f"Not measured: {vg['skipped']}", ""]
    check = vg.get("verification", {})
    out += [
        f"valgrind {vg.get('valgrind_version', '?')} (`{vg['tool']}`), ONNX Runtime with 1 thread, batch 1, "
        f"{vg['warmup']} warm-up runs, then instructions counted over {vg['iters']} runs (the difference of "
        f"two whole-process counts, {vg['iters']} runs minus 0, so start-up and session creation cancel), "
        "divided by the runs. valgrind shows programs a synthetic Haswell CPUID (AVX2/FMA, no AVX-512, no "
        "VNNI), so ONNX Runtime takes its AVX2 kernels: instructions executed there, not time.",
        "",
    ]
    if check:
        out += [f"Checked: {check.get('summary', '')}", ""]
    for model in vg.get("models", []):
        rows = model["rows"]
        out += [f"**{model['model']}**", "", "| model | instructions per inference (M) | vs FP32 | wall s |",
                "|---|---|---|---|"]  # fmt: skip
        fp = next((r["per_inference"] for r in rows if r["label"] == "fp32" and r.get("per_inference")), None)
        for r in rows:
            per = r.get("per_inference")
            rel = f"{per / fp:.2f}x" if per and fp else "—"
            cell = f"{per / 1e6:.2f}" if per else f"failed: {r.get('error', '?')}"
            out.append(f"| {r['label']} | {cell} | {rel} | {_f(r.get('wall_s'), 0)} |")
        out.append("")
    return out


def verification_lines(vg: dict | None) -> list[str]:
    rows = (vg or {}).get("verification", {}).get("rows") or []
    if not rows:
        return []
    out = ["| model | images | valgrind vs qemu Haswell: max abs logit diff | top-1 flips | valgrind vs host "
           "(native): max abs diff | top-1 flips |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['model']} | {r['images']} | {_f(r.get('vs_haswell_max_abs'), 6)} | "
                   f"{r.get('vs_haswell_flips', '—')} | {_f(r.get('vs_host_max_abs'), 6)} | "
                   f"{r.get('vs_host_flips', '—')} |")  # fmt: skip
    return [*out, ""]


def markdown(results: dict) -> str:
    """The report from the JSON the run wrote (``--render`` re-writes it without re-running)."""
    env = results["environment"]
    md = [
        "# INT8 numerics: s8 vs s7 vs u8u8 on every target's kernels",
        "",
        f"Produced by `benchmarks/int8_numerics.py` on {results['created_utc']}. CPU: "
        f"{env.get('cpu_model', '?')} (`{env.get('cpu_name', '?')}`, {env.get('logical_cores', '?')} logical "
        f"cores; ISA flags {', '.join(env.get('isa_flags', [])) or 'none of note'}; as a target: "
        f"{results.get('host_target')}); "
        + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v and v != "absent") + ".",
        "",
        "Each variant is its base recipe with `qat.numerics` set and `export.min_agreement: 0.0` (so every "
        "variant reaches bench; the last column is what the default 0.99 gate says: export stops the build "
        "on a checked target below it). agree: share of test images whose top-1 class equals the QAT torch "
        "model's; ✗ marks one under 99%. Targets: int8.onnx on each CPU's own ONNX Runtime kernels "
        "(host natively; x86-64-v3 under qemu-x86_64 -cpu Haswell; Cortex-A72/A76 under qemu-aarch64) on "
        "the export stage's seeded sample of the test split; OpenVINO on the host and the INT8 ORT host "
        "column use the whole test split. p50 and speed-up: the bench stage on this CPU (INT8 ONNX Runtime "
        "vs the fastest float on ONNX Runtime; paired: the ratio within alternating rounds, median over "
        "rounds). Emulated targets give numerics only, never a latency.",
        "",
    ]
    for model in results["models"]:
        ok = [v for v in model["variants"] if "error" not in v]
        imgs = {c: t.get("images") for v in ok for c, t in v["targets"].items() if t.get("images")}
        title = f"## {model['name']} (`{model['base']}`, {model.get('arch', '?')})"
        md += [title, "", *model_table(model), ""]
        fp_sample = sorted({_f(v["targets_fp32_top1"]) for v in ok if v.get("targets_fp32_top1") is not None})
        if imgs:
            fp_line = f" FP32 top-1 on the targets' sample: {', '.join(fp_sample)}%." if fp_sample else ""
            md += ["Images per target: " + ", ".join(f"{c} {n}" for c, n in imgs.items()) + "." + fp_line, ""]
        kernels = {c: t.get("kernel") for v in ok for c, t in v["targets"].items() if t.get("kernel")}
        if kernels:
            md += ["Kernel paths: " + "; ".join(f"{c}: {k}" for c, k in kernels.items()) + ".", ""]
    md += valgrind_lines(results.get("valgrind"))
    md += verification_lines(results.get("valgrind"))
    md += ["## Commands", "", "```", *results.get("commands", []), "```", ""]
    builds = [(m["name"], v) for m in results["models"] for v in m["variants"] if v.get("build")]
    if builds:
        md += ["| run | build wall min | stages cached (log) |", "|---|---|---|"]
        for name, v in builds:
            b = v["build"]
            cached = ", ".join(f"{s} {w}" for s, w in b.get("log_stages", {}).items())
            md.append(f"| {name}_{v['numerics']} | {b['wall_s'] / 60:.1f} | {cached or '—'} |")
        md.append("")
    if results.get("notes"):
        md += [*(f"- {n}" for n in results["notes"]), ""]
    if results.get("plot"):
        md += [f"![agreement per target and numerics]({results['plot']})", ""]
    return "\n".join(md)


def plot(results: dict, path: Path) -> Path | None:
    """Agreement per target, grouped bars per numerics, one panel per model; the 99% gate as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = [m for m in results["models"] if any("error" not in v for v in m["variants"])]
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        variants = [v for v in model["variants"] if "error" not in v]
        cols = columns(variants)
        width = 0.8 / max(1, len(variants))
        low = 100.0
        for i, v in enumerate(variants):
            vals = [_pct((v["targets"].get(c) or {}).get("agreement")) for c in cols]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(cols))]
            got = [(x, a) for x, a in zip(xs, vals, strict=True) if a is not None]
            low = min([low, *(a for _, a in got)])
            ax.bar([x for x, _ in got], [a for _, a in got], width, label=v["numerics"])
        ax.axhline(100 * GATE, color="k", ls="--", lw=0.8, label="gate 99%")
        ax.set_xticks(range(len(cols)), [c.replace(" (host)", "\n(host)") for c in cols], fontsize=8)
        ax.set_ylim(max(0.0, min(low, 100 * GATE) - 1.0), 100.2)
        ax.set_ylabel("agreement with QAT torch, %")
        ax.set_title(model["name"], fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(variants) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ valgrind
# Runs under valgrind: numpy and onnxruntime only (no edgepipe, no torch), so start-up stays short.
COUNT_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
model, warm, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def session(disabled=()):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))
s = session()
asked = s.get_modelmeta().custom_metadata_map.get("ort_disabled_optimizers")
if asked:
    s = session(json.loads(asked))
i = s.get_inputs()[0]
shape = [1] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
for _ in range(warm):
    s.run(None, {i.name: x})
for _ in range(iters):
    s.run(None, {i.name: x})
"""
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def callgrind_count(model: Path, warm: int, iters: int, timeout: float) -> tuple[int, float]:
    """Instructions the whole process executed under callgrind (start-up, session, warm-up, ``iters``
    runs)."""
    with tempfile.TemporaryDirectory(prefix="int8-numerics-cg-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable, "-c",
               COUNT_CHILD, str(model), str(warm), str(iters)]  # fmt: skip
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
    m = COLLECTED.search(p.stderr)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"callgrind exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    return int(m.group(1)), wall


def count_model(model: Path, warm: int, iters: int, timeout: float) -> dict:
    base, w0 = callgrind_count(model, warm, 0, timeout)
    total, w1 = callgrind_count(model, warm, iters, timeout)
    return {"file": str(model), "instructions_0": base, f"instructions_{iters}": total,
            "per_inference": (total - base) / iters, "wall_s": round(w0 + w1, 1)}  # fmt: skip


def _logits(prefix: list[str], model: Path, inputs: Path, work: Path, timeout: float) -> tuple[Any, dict]:
    """int8.onnx's logits from the targets' runner (stdlib + numpy + onnxruntime), run under ``prefix``."""
    import numpy as np

    from edgepipe.targets.check import RUNNER

    work.mkdir(parents=True, exist_ok=True)
    cmd = [*prefix, sys.executable, str(RUNNER), str(model), str(inputs), str(work), "--threads", "1",
           "--batch", "1"]  # batch 1, as counted
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(prefix) or 'native'} exit {p.returncode}: {p.stderr[-300:]}")
    return np.load(work / "logits.npy"), json.loads((work / "info.json").read_text())


def valgrind_isa(timeout: float = 120) -> dict:
    """numpy's CPU feature table natively and under valgrind: what ONNX Runtime's dispatch sees there."""
    code = ("from numpy._core._multiarray_umath import __cpu_features__ as f; import json; "
            "print(json.dumps(sorted(k for k, v in f.items() if v)))")  # fmt: skip
    out = {}
    for label, prefix in (("host", []), ("valgrind", ["valgrind", "-q", "--tool=none"])):
        p = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout)  # fmt: skip
        feats = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else []
        keep = ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512_VNNI", "AVX512BF16", "AVX_VNNI")
        out[label] = [k for k in keep if k in feats]
    return out


def verify(runs: dict[str, tuple[Path, Path]], timeout: float) -> dict:
    """int8.onnx of each numerics (label -> (run folder, its test images as .npy)) natively, under valgrind
    and under qemu Haswell: under valgrind it must compute qemu Haswell's (AVX2) logits."""
    import numpy as np

    from edgepipe.targets.emulation import X86_64_V3_CPU

    isa = valgrind_isa()
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-numerics-vg-") as tmp:
        for label, (run, x_path) in runs.items():
            model = run / "export" / "int8.onnx"
            got = {}
            for how, prefix in (("host", []), ("valgrind", ["valgrind", "-q", "--tool=none"]),
                                ("haswell", [shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu",
                                             X86_64_V3_CPU])):  # fmt: skip
                try:
                    got[how] = _logits(prefix, model, x_path, Path(tmp) / label / how, timeout)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    log.warning("verify %s %s: %s", label, how, exc)
            row: dict[str, Any] = {"model": label, "images": int(np.load(x_path).shape[0])}
            if "valgrind" in got:
                vg = got["valgrind"][0]
                row["valgrind_isa_seen"] = got["valgrind"][1].get("cpu", {}).get("isa_seen")
                for how in ("haswell", "host"):
                    if how in got:
                        other = got[how][0]
                        row[f"vs_{how}_max_abs"] = float(np.abs(vg - other).max())
                        row[f"vs_{how}_flips"] = int((vg.argmax(1) != other.argmax(1)).sum())
            rows.append(row)
    same = [r for r in rows if r.get("vs_haswell_max_abs") is not None]
    identical = bool(same) and all(r["vs_haswell_max_abs"] == 0.0 for r in same)
    no512 = "AVX2" in isa.get("valgrind", []) and not any("512" in f for f in isa.get("valgrind", []))
    summary = (
        f"numpy's dispatch under valgrind sees {', '.join(isa.get('valgrind', [])) or 'nothing'} (host: "
        f"{', '.join(isa.get('host', []))}); "
        + ("int8.onnx's logits under valgrind equal those under qemu Haswell bit for bit for every model"
           if identical else "int8.onnx's logits under valgrind do NOT all equal those under qemu Haswell")
        + " (and how far each is from the host's AVX-512 VNNI logits: table below)"
    )  # fmt: skip
    return {"isa": isa, "rows": rows, "avx2_path": identical and no512, "summary": summary}


def valgrind_section(models: list[dict], out: Path, args) -> dict:
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind not installed (apt-get install valgrind)"}
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    res: dict[str, Any] = {"tool": "valgrind --tool=callgrind", "valgrind_version": version.split("-")[-1],
                           "warmup": args.vg_warmup, "iters": args.vg_iters, "models": []}  # fmt: skip
    verify_runs: dict[str, tuple[Path, Path]] = {}
    x_dir = Path(tempfile.mkdtemp(prefix="int8-numerics-x-"))
    for model in models:
        ok = [v for v in model["variants"] if "error" not in v]
        if not ok:
            continue
        rows = []
        first = out / ok[0]["run"]
        todo = [("fp32", first / "export" / "fp32.onnx")]
        todo += [(f"int8 {v['numerics']}", out / v["run"] / "export" / "int8.onnx") for v in ok]
        for label, path in todo:
            log.info("callgrind %s %s", model["name"], label)
            try:
                counted = count_model(path, args.vg_warmup, args.vg_iters, args.vg_timeout)
                rows.append({"label": label, **counted})
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows.append({"label": label, "file": str(path), "error": str(exc)[:300]})
                log.warning("callgrind %s: %s", label, exc)
            log.info("  %s", rows[-1].get("per_inference"))
        res["models"].append({"model": model["name"], "rows": rows})
        x_path = x_dir / f"{model['name']}.npy"  # the model's own preprocessing
        np_save_test_images(first, Path(ok[0]["recipe"]), x_path, args.vg_images)
        for v in ok:
            verify_runs[f"{model['name']} {v['numerics']}"] = (out / v["run"], x_path)
    if verify_runs:
        log.info("verifying valgrind's kernel path on %d images", args.vg_images)
        res["verification"] = verify(verify_runs, args.vg_timeout)
    shutil.rmtree(x_dir, ignore_errors=True)
    return res


def np_save_test_images(run: Path, recipe_file: Path, path: Path, n: int) -> None:
    """The first ``n`` test images of a run, preprocessed as its models expect."""
    import numpy as np

    from edgepipe.data.loaders import SplitData
    from edgepipe.models.checkpoint import read_checkpoint
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    ck = read_checkpoint(run / "finetune" / "model.pt")
    pre = Preprocessing.from_dict(ck["preprocessing"])
    ds = SplitData(run / "split" / "split.json", recipe.data, pre, recipe.seed).dataset("test")
    np.save(path, np.stack([ds[i][0].numpy() for i in range(n)]).astype(np.float32))


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    import yaml

    from edgepipe.artifacts import atomic_write_json, atomic_write_text
    from edgepipe.bench.timing import cpu_name, environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", nargs="+", default=list(BASES), help="base recipes, relative to the repo root")
    ap.add_argument("--numerics", nargs="+", default=list(NUMERICS), choices=NUMERICS)
    ap.add_argument("--out", type=Path, default=Path("/work/runs/art"), help="edgepipe build --out")
    ap.add_argument("--work", type=Path, default=Path("/work/runs/int8_numerics"),
                    help="derived recipes and build logs")  # fmt: skip
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--cpu-name", help="names the result files (default: bench.timing.cpu_name)")
    ap.add_argument("--skip-build", action="store_true", help="tables from the runs already in --out")
    ap.add_argument("--no-valgrind", action="store_true")
    ap.add_argument("--vg-warmup", type=int, default=5)
    ap.add_argument("--vg-iters", type=int, default=20)
    ap.add_argument("--vg-images", type=int, default=64, help="test images for the valgrind path check")
    ap.add_argument("--vg-timeout", type=float, default=300.0, help="seconds per valgrind process")
    ap.add_argument("--render", action="store_true", help="re-write the .md (and .png) from the .json only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = args.cpu_name or cpu_name()
    stem = args.results / f"int8_numerics_{name}"
    if args.render:
        results = json.loads(stem.with_suffix(".json").read_text())
        if plot(results, stem.with_suffix(".png")):
            results["plot"] = stem.with_suffix(".png").name
        atomic_write_text(stem.with_suffix(".md"), markdown(results))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    python = Path(sys.executable)
    python_shown = python.relative_to(ROOT) if ROOT in python.parents else python
    commands = [" ".join([str(python_shown), "benchmarks/int8_numerics.py", *sys.argv[1:]])]
    models = []
    t_all = time.perf_counter()
    for base_file in args.bases:
        base = yaml.safe_load((ROOT / base_file).read_text())
        entry = {"base": base_file, "name": base["name"], "arch": base.get("model", {}).get("arch"),
                 "variants": []}  # fmt: skip
        for numerics in args.numerics:
            recipe = derive(base, numerics)
            recipe_file = args.work / f"{recipe['name']}.yaml"
            recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
            variant: dict[str, Any] = {"numerics": numerics, "run": recipe["name"],
                                       "recipe": str(recipe_file)}  # fmt: skip
            if not args.skip_build:
                if numerics == "u8u8":
                    variant["seeded_from_s8"] = seed_u8u8(args.out, base["name"])
                variant["build"] = build(recipe_file, args.out, args.work / f"{recipe['name']}.log")
                commands.append(f"EDGEPIPE_PROGRESS=0 {variant['build']['command']}")
            report = args.out / recipe["name"] / "report.json"
            if variant.get("build", {}).get("rc", 0) != 0 or not report.is_file():
                variant["error"] = variant.get("build", {}).get("error") or f"no {report}"
            else:
                variant.update(collect(json.loads(report.read_text())))
                variant["numerics"] = numerics
            entry["variants"].append(variant)
        models.append(entry)
    env = environment()
    from edgepipe.targets import host_target

    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "host_target": host_target(),
        "settings": {"out": str(args.out), "gate_min_agreement": GATE, "numerics": args.numerics},
        "commands": commands,
        "builds_wall_s": round(time.perf_counter() - t_all, 1),
        "models": models,
        "notes": [],
    }
    if args.skip_build and stem.with_suffix(".json").is_file():
        carry_builds(json.loads(stem.with_suffix(".json").read_text()), results)
    results["notes"] = auto_notes(results)
    args.results.mkdir(parents=True, exist_ok=True)

    def write() -> str:
        if plot(results, stem.with_suffix(".png")):
            results["plot"] = stem.with_suffix(".png").name
        atomic_write_json(stem.with_suffix(".json"), results)
        md = markdown(results)
        atomic_write_text(stem.with_suffix(".md"), md)
        return md

    write()  # the builds' tables first: the valgrind part takes a while
    if not args.no_valgrind:
        t0 = time.perf_counter()
        results["valgrind"] = valgrind_section(models, args.out, args)
        results["valgrind"]["wall_s"] = round(time.perf_counter() - t0, 1)
    print(write())


def carry_builds(old: dict, new: dict) -> None:
    """--skip-build: keep the earlier JSON's build records (command, wall time, what the log said) and its
    build commands for the runs it built."""
    builds = {v["run"]: v for m in old.get("models", []) for v in m["variants"] if v.get("build")}
    for m in new["models"]:
        for v in m["variants"]:
            if v["run"] in builds:
                v.setdefault("build", builds[v["run"]]["build"])
                if "seeded_from_s8" in builds[v["run"]]:
                    v.setdefault("seeded_from_s8", builds[v["run"]]["seeded_from_s8"])
    new["commands"] = [*[c for c in old.get("commands", []) if c.startswith("EDGEPIPE_PROGRESS")],
                       *new["commands"]]  # fmt: skip
    if "builds_wall_s" in old:
        new["builds_wall_s"] = old["builds_wall_s"]


if __name__ == "__main__":
    main()
