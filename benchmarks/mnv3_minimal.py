"""Standard vs minimalistic MobileNetV3-Large, FP32 vs QAT INT8: which one pays in INT8, on this CPU.

Two finished runs of the same data and schedule (recipes/mnv3_qat.yaml, recipes/mnv3_minimal_qat.yaml):
top-1 (FP32, QAT INT8, ORT PTQ) and agreement on every target from their reports; GMACs counted from the
exported graphs; size; latency on ONNX Runtime and OpenVINO at the run's size (the files the build shipped)
and at 224 px (the same checkpoints re-exported through the export stage's own writer). On each runtime all
four models and every native float mode are timed in the same alternating rounds, so a ratio taken within a
round compares models that ran back to back; the paired speed-up is the median of those ratios, the spread
(quartiles over rounds) beside it. Every speed-up names its baseline: the fastest float row of the same
model on the same runtime, and (for the minimalistic INT8) the standard model's INT8 and fastest float.

    .venv/bin/python benchmarks/mnv3_minimal.py [--standard artifacts/mnv3_qat] \
        [--minimal artifacts/mnv3_minimal_qat] [--sizes 0 224] [--rounds 30 --iters 20]

Writes benchmarks/results/mnv3_minimal_<cpu>.json, .md and .png (<cpu>: bench.timing.cpu_name()).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import atomic_write_json, atomic_write_text

log = logging.getLogger("mnv3_minimal")
RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"standard": "recipes/mnv3_qat.yaml", "minimalistic": "recipes/mnv3_minimal_qat.yaml"}


def accuracy(run: Path) -> dict[str, Any]:
    """Top-1 per model and runtime label, and agreement per target, from the run's report.json."""
    doc = json.loads((run / "report.json").read_text())
    top1 = {f"{r['model']} · {r['runtime_label']}": r["top1"] for r in doc["rows"] if r["batch_size"] == 1}
    targets = {
        f"{t['target']} · {t['runtime']}": t["agreement"]
        for t in doc.get("targets") or []
        if t["model"] == "int8-qat"
    }
    return {"top1": top1, "targets": targets, "input": doc["models"][0]["input_size"]}


def model_files(run: Path, recipe_file: str, size: int, work: Path) -> dict[str, dict[str, Path]]:
    """{fp32|int8: {onnx|xml: path}}: the run's own files, or the checkpoints re-exported at ``size``."""
    if size == 0:
        exp = run / "export"
        return {k: {"onnx": exp / f"{k}.onnx", "xml": exp / f"{k}.xml"} for k in ("fp32", "int8")}

    from edgepipe.models.build import load_qat_model, rebuild
    from edgepipe.models.checkpoint import read_checkpoint
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.quant.qdq import to_qdq_module
    from edgepipe.recipe import load_recipe
    from edgepipe.stages.export import write_model_files

    r = load_recipe(ROOT / recipe_file)
    fp = read_checkpoint(run / "finetune" / "model.pt")
    q = read_checkpoint(run / "qat" / "model.pt")
    own = Preprocessing.from_dict(fp["preprocessing"])
    pre = Preprocessing.make(size, mean=own.mean, std=own.std)  # the same statistics at another size
    meta = {"classes": fp["classes"], "preprocessing": pre.to_dict()}
    numerics = q.get("quant", {}).get("numerics")
    out = {}
    twins = (("fp32", rebuild(fp).eval(), False), ("int8", to_qdq_module(load_qat_model(q)), True))
    for key, model, qdq in twins:
        path = work / f"{run.parent.name}_{run.name}_{key}_{size}.onnx"
        xml, _ = write_model_files(model, path, [3, size, size], meta, r, qdq, numerics)
        out[key] = {"onnx": path, "xml": xml}
    return out


def time_runtime(
    runtime: str,
    files: dict[str, dict[str, dict[str, Path]]],
    threads: int,
    rounds: int,
    iters: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Every arch's FP32 (in each native float mode) and INT8 (as our loaders load it) on ``runtime``, in
    one set of alternating rounds."""
    import onnx

    from edgepipe.bench.harness import alternating_rounds, model_size_mb, round_medians
    from edgepipe.runtimes import float_modes, get_runtime

    entries: dict[str, tuple[str, str, str, Path]] = {}
    for arch, by_key in files.items():
        suffix = "xml" if runtime == "openvino" else "onnx"
        for mode, _ in float_modes(runtime):
            entries[f"{arch} fp32 {mode}"] = (arch, "fp32", mode, by_key["fp32"][suffix])
        entries[f"{arch} int8"] = (
            arch,
            "int8",
            "auto" if runtime == "openvino" else "int8",
            by_key["int8"][suffix],
        )
    rts = {}
    for name, (_, _key, mode, path) in entries.items():
        opts = {"precision": mode} if runtime == "openvino" else {}
        rts[name] = get_runtime(runtime, path, threads=threads, **opts)
    some = next(iter(files.values()))["fp32"]["onnx"]
    graph = onnx.load(str(some), load_external_data=False).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    sample = np.random.default_rng(0).standard_normal([1, *dims[1:]], dtype=np.float32)
    # each model warms up again at its turn in every round (order shuffled), then a pause parks its threads
    calls = alternating_rounds(rts, sample, rounds, iters, warmup, settle_s=0.01)
    rows = []
    for name, (arch, key, mode, path) in entries.items():
        flat = [t for one in calls[name] for t in one]
        rows.append(
            {
                "name": name,
                "arch": arch,
                "model": key,
                "mode": mode,
                "runtime": runtime,
                "input": [1, *dims[1:]],
                "p50_ms": float(np.median(flat)),
                "round_medians_ms": round_medians(calls[name]),
                "size_mb": round(model_size_mb(path), 3),
            }
        )
    return rows


def _ratios(base: dict, row: dict) -> dict[str, float]:
    r = np.array(base["round_medians_ms"]) / np.array(row["round_medians_ms"])
    q1, med, q3 = (float(v) for v in np.percentile(r, [25, 50, 75]))
    return {"paired": med, "q1": q1, "q3": q3, "single_pass": base["p50_ms"] / row["p50_ms"]}


def add_speedups(rows: list[dict]) -> None:
    """vs the same arch's fastest float on this runtime; the minimalistic INT8 also vs the standard's INT8
    and the standard's fastest float."""

    def fastest_float(arch: str) -> dict:
        return min((r for r in rows if r["arch"] == arch and r["model"] == "fp32"), key=lambda r: r["p50_ms"])

    for r in rows:
        base = fastest_float(r["arch"])
        r["vs_fastest_float"] = {"baseline": base["name"], **_ratios(base, r)}
        if r["arch"] == "minimalistic" and r["model"] == "int8":
            std_int8 = next(x for x in rows if x["arch"] == "standard" and x["model"] == "int8")
            std_float = fastest_float("standard")
            r["vs_standard_int8"] = {"baseline": std_int8["name"], **_ratios(std_int8, r)}
            r["vs_standard_fastest_float"] = {"baseline": std_float["name"], **_ratios(std_float, r)}


def layer_profile(int8_onnx: Path, size: int) -> dict[str, Any]:
    """Each INT8 convolution timed alone on ONNX Runtime, as int8 and as float (quant.mixed.profile_layers),
    summed by kind: the stem (the first conv, 3 input channels), depthwise, and the rest (1x1 and head)."""
    from edgepipe.quant.mixed import profile_layers

    layers = profile_layers(int8_onnx, [3, size, size], threads=2)
    kinds: dict[str, dict[str, float]] = {}
    for i, one in enumerate(layers.values()):
        kind = "stem" if i == 0 else "depthwise" if one["group"] > 1 else "pointwise"
        k = kinds.setdefault(kind, {"convs": 0, "int8_ms": 0.0, "float_ms": 0.0})
        k["convs"] += 1
        k["int8_ms"] += one["int8_ms"]
        k["float_ms"] += one["float_ms"]
    return {"by_kind": kinds, "layers": layers}


def macs(files: dict[str, dict[str, dict[str, Path]]]) -> dict[str, float]:
    from edgepipe.bench.macs import count_macs

    return {arch: count_macs(f["fp32"]["onnx"])["gmacs"] for arch, f in files.items()}


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _x(s: dict | None) -> str:
    return "—" if not s else f"{s['paired']:.2f}x ({s['q1']:.2f}–{s['q3']:.2f})"


def issue_targets(res: dict) -> list[str]:
    """The targets the comparison was asked to show, each with its measured value and met / not met."""
    env, out = res["environment"], []
    vnni = "avx512_vnni" in env["isa_flags"] or "avx_vnni" in env["isa_flags"]
    mini = {
        (size, rt): next(r for r in rows if r["arch"] == "minimalistic" and r["model"] == "int8")
        for size, by_rt in res["timing"].items()
        for rt, rows in by_rt.items()
    }
    big = max(res["timing"], key=int)
    if (big, "onnxruntime") in mini and int(big) >= 224:
        v = mini[big, "onnxruntime"]["vs_fastest_float"]["paired"]
        need = 2.3 if vnni else 1.5
        out.append(
            f"- INT8 >= {need}x the fastest float on ONNX Runtime at {big} px "
            f"({'VNNI' if vnni else 'AVX2-only'} CPU): {v:.2f}x, **{'met' if v >= need else 'not met'}**."
        )
    slower = [f"{rt} at {s} px" for (s, rt), r in mini.items() if r["vs_standard_int8"]["paired"] <= 1]
    out.append(
        "- INT8 faster than the standard model's INT8 on both runtimes: "
        + ("**met** at every size" if not slower else f"**not met** ({', '.join(slower)})")
        + "."
    )
    acc = res["accuracy"]
    m8, s32 = (
        acc["minimalistic"]["top1"].get("int8-qat · onnxruntime"),
        acc["standard"]["top1"].get("fp32 · onnxruntime"),
    )
    if m8 is not None and s32 is not None:
        out.append(
            f"- INT8 top-1 within 1 pt of the standard FP32: {m8:.2f} vs {s32:.2f}, "
            f"**{'met' if s32 - m8 <= 1 else 'not met'}**."
        )
    t = acc["minimalistic"]["top1"]
    pairs = [
        (t.get(f"int8-qat · {lab}"), t.get(f"int8-ptq · {lab}"), lab)
        for lab in ("onnxruntime", "openvino-auto")
    ]
    below = [f"{lab} {q:.2f} < {p:.2f}" for q, p, lab in pairs if q is not None and p is not None and q < p]
    out.append(
        "- QAT INT8 at or above every PTQ baseline: "
        + (
            "**met** (" + ", ".join(f"{lab} {q:.2f} vs {p:.2f}" for q, p, lab in pairs if q and p) + ")"
            if not below
            else f"**not met** ({', '.join(below)})"
        )
        + "."
    )
    agree = acc["minimalistic"]["targets"]  # fractions; the text shows %
    low = [f"{k} {100 * v:.2f}" for k, v in agree.items() if v is not None and v < 0.995]
    out.append(
        "- Agreement >= 99.5% on every target: "
        + ("**met**" if not low else f"**not met**: {', '.join(low)}")
        + "."
    )
    return ["", "## The issue's targets (minimalistic)", "", *out]


def markdown(res: dict) -> str:
    env = res["environment"]
    md = [
        f"# Standard vs minimalistic MobileNetV3-Large on {env['cpu_name']}",
        "",
        f"CPU: {env['cpu_model']} ({env['logical_cores']} logical cores; "
        f"{', '.join(env['isa_flags'])}). "
        f"{res['threads']} threads, batch 1; per runtime every model and float mode timed in the same "
        f"{res['rounds']} alternating rounds of {res['iters']} calls (order shuffled per round). Paired: "
        "the ratio of round medians within each round, median over rounds (quartiles in brackets). By "
        "`benchmarks/mnv3_minimal.py`.",
        "",
        "## Accuracy (the runs' test split) and agreement on every target",
        "",
        "| model | GMACs at the run's size | FP32 top-1 | QAT INT8 top-1 | ORT PTQ top-1 | INT8 agreement "
        "per target (%) |",
        "|---|---|---|---|---|---|",
    ]
    for arch, a in res["accuracy"].items():
        t = a["top1"]
        agree = ", ".join(f"{k} {100 * v:.2f}" for k, v in a["targets"].items() if v is not None) or "—"
        cells = [_pct(t.get(f"{m} · onnxruntime")) for m in ("fp32", "int8-qat", "int8-ptq")]
        md.append(f"| {arch} | {a['gmacs']:.4f} | {' | '.join(cells)} | {agree} |")
    for size, by_rt in res["timing"].items():
        own = " (the run's own files)" if size == "0" else ""
        shown = f"{by_rt[next(iter(by_rt))][0]['input'][-1]} px{own}"
        gm = res["gmacs"][size]
        md += [
            "",
            f"## Latency at {shown}",
            "",
            f"GMACs: standard {gm['standard']:.4f}, minimalistic {gm['minimalistic']:.4f} "
            f"({gm['minimalistic'] / gm['standard']:.2f}x).",
            "",
            "| runtime | model | p50 ms | MB | paired speed-up vs its fastest float | minimalistic INT8 vs "
            "standard INT8 | vs standard's fastest float |",
            "|---|---|---|---|---|---|---|",
        ]
        for rt, rows in by_rt.items():
            for r in rows:
                md.append(
                    f"| {rt} | {r['name']} | {r['p50_ms']:.3f} | {r['size_mb']:.2f} | "
                    f"{_x(r['vs_fastest_float'])} vs {r['vs_fastest_float']['baseline']} | "
                    f"{_x(r.get('vs_standard_int8'))} | {_x(r.get('vs_standard_fastest_float'))} |"
                )
    md += issue_targets(res)
    for size, by_arch in res.get("layer_profile", {}).items():
        md += [
            "",
            f"## Where the INT8 time goes: ONNX Runtime, {size} px, each convolution timed alone",
            "",
            "quant.mixed.profile_layers: every conv of int8.onnx cut out with its Q/DQ and timed alone as "
            "int8 and as float, medians of alternating rounds, summed by kind (alone, a float conv misses "
            "the whole model's NCHWc layout and fusions: compare kinds with each other, not with the model's "
            "p50).",
            "",
            "| model | kind | convs | int8 ms | float ms | int8 speed-up |",
            "|---|---|---|---|---|---|",
        ]
        for arch, prof in by_arch.items():
            for kind, k in prof["by_kind"].items():
                md.append(
                    f"| {arch} | {kind} | {k['convs']} | {k['int8_ms']:.3f} | {k['float_ms']:.3f} | "
                    f"{k['float_ms'] / k['int8_ms']:.2f}x |"
                )
    md += ["", "## Commands", "", "```", *res["commands"], "```", ""]
    return "\n".join(md)


def plot(res: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(s, rt, rows) for s, by_rt in res["timing"].items() for rt, rows in by_rt.items()]
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=80)
    FigureCanvasAgg(fig)
    for i, (_size, rt, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        colors = ["C0" if r["arch"] == "standard" else "C1" for r in rows]
        ax.barh([r["name"] for r in rows], [r["p50_ms"] for r in rows], color=colors)
        ax.set_title(f"{rt}, {rows[0]['input'][-1]} px", fontsize=9)
        ax.set_xlabel("p50 ms, batch 1")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main() -> None:
    from edgepipe.bench.timing import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--standard", type=Path, default=ROOT / "artifacts" / "mnv3_qat")
    ap.add_argument("--minimal", type=Path, default=ROOT / "artifacts" / "mnv3_minimal_qat")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 224], help="0: the run's own files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs = {"standard": args.standard, "minimalistic": args.minimal}
    env = environment()
    res: dict[str, Any] = {
        "environment": env,
        "threads": args.threads,
        "rounds": args.rounds,
        "iters": args.iters,
        "runs": {k: str(v) for k, v in runs.items()},
        "accuracy": {a: accuracy(r) for a, r in runs.items()},
        "gmacs": {},
        "timing": {},
        "commands": [" ".join([".venv/bin/python benchmarks/mnv3_minimal.py", *sys.argv[1:]])],
    }
    for arch, gm in macs({a: model_files(r, ARCHS[a], 0, Path()) for a, r in runs.items()}).items():
        res["accuracy"][arch]["gmacs"] = gm  # counted from the graph the run shipped
    with tempfile.TemporaryDirectory(prefix="mnv3-minimal-") as tmp:
        for size in args.sizes:
            files = {a: model_files(run, ARCHS[a], size, Path(tmp)) for a, run in runs.items()}
            res["gmacs"][str(size)] = macs(files)
            res["timing"][str(size)] = {}
            if size:  # where the INT8 time goes, per kind of conv (the run's own size: the stage's profile)
                res.setdefault("layer_profile", {})[str(size)] = {
                    a: layer_profile(f["int8"]["onnx"], size) for a, f in files.items()
                }
            for rt in ("onnxruntime", "openvino"):
                log.info("timing %s at size %s", rt, size or "of the run")
                rows = time_runtime(rt, files, args.threads, args.rounds, args.iters, args.warmup)
                add_speedups(rows)
                res["timing"][str(size)][rt] = rows
    stem = args.out / f"mnv3_minimal_{env['cpu_name']}"
    atomic_write_json(stem.with_suffix(".json"), res)
    atomic_write_text(stem.with_suffix(".md"), markdown(res))
    plot(res, stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
