"""The one bench document (``edgepipe.bench/3``), its Markdown view and its plots.

`edgepipe bench --json` and a run's ``report.json`` are both built by :func:`document`, drawn by
:func:`write_plots` and shown by :func:`markdown`; docs/report_schema.md documents every field and
:mod:`edgepipe.bench.schema` checks them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench import verdict
from edgepipe.bench.rows import baseline_name
from edgepipe.cpu import native_bf16
from edgepipe.runtimes.registry import runtime_for, runtime_spec

SCHEMA = "edgepipe.bench/3"
PLOTS = {"accuracy_vs_latency": "accuracy vs latency", "latency": "latency distribution",
         "gradcam": "Grad-CAM of test images, FP32 vs QAT"}  # fmt: skip
_MATCH_WORDS = {"runtime_label": "runtime (with its precision)", "runtime": "runtime", "batch_size": "batch"}


def document(
    *,
    environment: dict[str, Any],
    settings: dict[str, Any],
    baseline: dict[str, Any],
    data: dict[str, Any] | None,
    models: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    gates: list[dict[str, Any]],
    notes: list[str],
    plots: dict[str, str],
    reference: dict[str, Any] | None = None,
    recipe: str | None = None,
    stages: dict[str, Any] | None = None,
    targets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every key always present (None where it does not apply), so readers never guess which tool wrote it."""
    from edgepipe import __version__

    return {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgepipe_version": __version__,
        "recipe": recipe,
        "environment": environment,
        "settings": settings,
        "baseline": baseline,
        "data": data,
        "reference": reference,
        "models": models,
        "rows": rows,
        "gates": gates,
        "stages": stages,
        "notes": notes,
        "plots": plots,
        "targets": targets,
        "verdicts": verdict.verdicts(rows, settings.get("max_top1_drop") or verdict.DEFAULT_MAX_TOP1_DROP),
    }


def _pct(fraction: float | None) -> float | None:
    """A fraction (agreement, 0..1) as the percentage Markdown shows."""
    return None if fraction is None else 100 * fraction


def targets_markdown(targets: list[dict[str, Any]], reference: str = "the QAT torch model") -> list[str]:
    """The targets table: where each model was checked, on which kernels, and how right it is there (device
    rows have their own table: devices_markdown)."""
    targets = [t for t in targets if t["how"] != "device"]
    if not targets:
        return []

    def cell(v: Any, nd: int = 2) -> str:
        return "—" if v is None else f"{v:.{nd}f}"

    lines = [
        "## Targets: each model on each CPU's own kernels",
        "",
        f"| model | target | CPU | how it ran | runtime and kernel path | images | agree % vs {reference} "
        "| top-1 % | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        how = t["how"] if t["how"] in ("native", "emulated", "device") else f"**{t['how']}**: {t['reason']}"
        lines.append(
            f"| {t['model']} | {t['target']} | {t['title']} | {how} | {t['runtime']} "
            f"{t.get('runtime_version') or ''}: {t['kernel']} | {t['images'] or '—'} "
            f"| {cell(_pct(t['agreement']))} | {cell(t['top1'])} | {cell(t.get('latency_ms'), 3)} |"
        )
    lines += [
        "",
        "Emulated: qemu-user runs the runtime's own kernels for that CPU, so its integers are that CPU's; "
        "emulated wall time is not a latency, so latency is given only where a target ran natively. "
        "A target not checked is never counted as passed.",
        "",
    ]
    return lines


def devices_markdown(targets: list[dict[str, Any]], reference: str) -> list[str]:
    """The device table: each model's batch-1 timing and memory on each real device (``how: device``)."""
    rows = [t for t in targets if t["how"] == "device" and t.get("latency")]
    if not rows:
        return []

    def cell(v: Any, nd: int = 3) -> str:
        return "—" if v is None else f"{v:.{nd}f}"

    lines = [
        "## On devices: batch-1 latency measured there",
        "",
        "| model | device | CPU | cold ms | p50 ms | p90 ms | p99 ms | peak RSS MB | paired speed-up "
        f"| top-1 % | agree % vs {reference} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        lat = t["latency"]
        lines.append(
            f"| {t['model']} | {t['target']} | {t['title']} | {cell(lat['cold_ms'], 2)} "
            f"| {cell(lat['p50_ms'])} | {cell(lat['p90_ms'])} | {cell(lat['p99_ms'])} "
            f"| {cell(t.get('peak_rss_mb'), 1)} | {cell(t.get('speedup_paired'), 2)} "
            f"| {cell(t['top1'], 2)} | {cell(_pct(t['agreement']), 2)} |"
        )
    first = {}
    for t in rows:
        first.setdefault(t["target"], t["model"])
    vs = ", ".join(f"{m} on {d}" for d, m in first.items())
    lines += [
        "",
        f"Paired speed-up: vs the first model on the same device ({vs}), the ratio of their medians within "
        "each alternating round, median over rounds. Peak RSS: the device process that loaded and timed that "
        "model alone. Each row's `cpu` in the JSON is the device's fingerprint.",
        "",
    ]
    return lines


HOST_ORT = "the same model on ONNX Runtime here (host)"


def targets_reference(doc: dict[str, Any]) -> str:
    """What the targets' agreement compares with: a run's QAT torch model; in `edgepipe bench`, the
    --reference model, else each model's own host run on ONNX Runtime."""
    if doc.get("recipe") is not None:
        return "the QAT torch model"
    ref = doc.get("reference")
    if ref is None:
        return HOST_ORT
    return f"{ref['model']} on {ref['runtime']}"


def write_plots(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """The PNGs the rows can feed (accuracy needs top-1, distributions need latency samples)."""
    from edgepipe.bench import plots

    out = {}
    for key, fn in (
        ("accuracy_vs_latency", plots.accuracy_vs_latency),
        ("latency", plots.latency_distribution),
    ):
        path = fn(rows, Path(out_dir) / f"{key}.png")
        if path is not None:
            out[key] = path
    return out


def drop_samples(rows: list[dict[str, Any]]) -> None:
    """Raw latency samples feed the plots; documents keep the statistics."""
    for r in rows:
        r["latency"].pop("samples_ms", None)


def _fmt(v: Any, nd: int = 2, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}{suffix}"
    return f"{v}{suffix}"


def _columns(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = doc["rows"]
    acc = any(r.get("top1") is not None for r in rows)
    names = {baseline_name(r) for r in rows} - {None}
    one_base = len(names) == 1
    cols: list[tuple[str, Any]] = [
        ("model", lambda r: r["model"]),
        ("runtime", lambda r: r["runtime_label"]),
        ("batch", lambda r: r["batch_size"]),
    ]
    if acc:
        cols += [
            ("top-1 %", lambda r: _fmt(r.get("top1"))),
            ("top-5 %", lambda r: _fmt(r.get("top5"))),
            ("macro F1 %", lambda r: _fmt(r.get("macro_f1"))),
        ]
    if doc.get("reference") is not None:
        cols.append(("agree % vs ref", lambda r: _fmt(_pct(r.get("agreement")))))
    cols += [
        ("GMACs", lambda r: "–" if r.get("gmacs") is None else f"{r['gmacs']:.4g}"),
        (
            "INT8 MACs",
            lambda r: _fmt(None if r.get("int8_mac_share") is None else 100 * r["int8_mac_share"], 0, "%"),
        ),
        ("p50 ms", lambda r: _fmt(r["latency"]["p50_ms"], 3)),
        ("p99 ms", lambda r: _fmt(r["latency"]["p99_ms"], 3)),
        ("img/s", lambda r: _fmt(r["latency"]["throughput_ips"], 1)),
        ("cold ms", lambda r: _fmt(r["latency"]["cold_ms"], 1)),
    ]
    if any(r.get("memory") for r in rows):
        cols.append(("peak MB", lambda r: _fmt((r.get("memory") or {}).get("peak_delta_mb"), 1)))
    def paired(r: dict) -> str:
        if r.get("speedup_paired") is None:
            return ""
        iqr = r.get("speedup_paired_iqr")
        spread = f", IQR {iqr[0]:.2f}–{iqr[1]:.2f}" if iqr and not r.get("is_baseline") else ""
        return f" (paired {r['speedup_paired']:.2f}x{spread})"

    if one_base:
        cols.append((f"speed-up vs {names.pop()}", lambda r: _fmt(r.get("speedup"), 2, "x") + paired(r)))
    else:  # rows divide by different baselines: each cell names its own
        cols.append(
            (
                "speed-up",
                lambda r: (
                    _fmt(r.get("speedup"), 2, "x")
                    + (f" vs {baseline_name(r)}" if r.get("speedup") is not None else "")
                    + paired(r)
                ),
            )
        )
    if acc:
        cols.append(("top-1 drop", lambda r: _fmt(r.get("acc_drop"))))
    cols.append(("size MB", lambda r: _fmt(r["size_mb"])))
    if acc:
        cols += [
            ("top-1/GFLOP", lambda r: _fmt(r.get("top1_per_gflop"), 1)),
            ("top-1/ms", lambda r: _fmt(r.get("top1_per_ms"), 2)),
        ]
    return cols


def markdown(doc: dict[str, Any]) -> str:
    """Models x runtimes x batch sizes side by side; accuracy columns only when accuracy was measured."""
    rows, settings, env = doc["rows"], doc["settings"], doc["environment"]
    cols = _columns(doc)
    text = [f"# edgepipe report: {doc['recipe']}", ""] if doc.get("recipe") else []
    warn = [n for n in doc.get("notes", []) if n.startswith(WARNING)]
    text += [*(f"**{n}**" for n in warn), ""] if warn else []
    text += [
        "| " + " | ".join(c for c, _ in cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(get(r)) for _, get in cols) + " |" for r in rows),
        "",
    ]
    base = doc["baseline"]
    match = " and ".join(_MATCH_WORDS.get(k, k) for k in base.get("match", []))
    threads = f"{settings['threads']} thread" + ("s" if settings["threads"] != 1 else "")
    hints = ""  # the runtimes with a precision option: the hints their rows ran with
    for spec in map(runtime_spec, dict.fromkeys(r["runtime"] for r in rows)):
        moded = [r for r in rows if r["runtime"] == spec.name]
        if spec.takes_precision:
            precisions = ", ".join(dict.fromkeys(str(r["precision"]) for r in moded))
            hints += f" {spec.title}: precision hint {precisions}, performance hint {moded[0]['perf_hint']}."
    peak = (
        " Peak MB: RSS rise while loading the runtime and timing it."
        if any(r.get("memory") for r in rows)
        else ""
    )
    rounds = next((len(r["latency"]["round_medians_ms"]) for r in rows
                   if r["latency"].get("round_medians_ms")), 0)
    paired = (
        f" Paired: every row timed again in {rounds} alternating rounds (each warmed up within its round), "
        "the speed-up taken within each round and its median over rounds, with the interquartile range of "
        "the per-round ratios (drift of the machine between rounds cancels; trust it over the single-pass "
        "p50 ratio on a shared machine)."
        if rounds
        else ""
    )
    who = f"**{base['model']}**" + (f" ({', '.join(base['models'])})" if base.get("models") else "")
    basis = (
        f"{'the fastest ' if base.get('pick') == 'fastest' else ''}{who} row on the same {match}"
        if base.get("models") != []
        else "none (no float model was benched, so no speed-up or top-1 drop)"
    )
    text.append(
        f"Baseline for speed-up (p50 ratio) and top-1 drop (points): {basis}. "
        f"Latency: {threads}, {settings['warmup']} warm-up runs, then at least {settings['min_iters']} runs "
        f"and {settings['min_seconds']:g} s per row; cold = first inference.{hints}{peak}{paired}"
    )
    pk = env.get("packages", {})
    text.append(
        f"CPU: {env.get('cpu_model', '?')} ({env.get('logical_cores', '?')} logical cores; "
        f"{', '.join(env.get('isa_flags', [])) or 'no VNNI/AMX/AVX-512 flags'}); "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v != "absent")
        + "."
    )
    if doc.get("data") is not None:
        d = doc["data"]
        text.append(
            f"Accuracy: {d['images']} images of {d['data']} ({d['kind']}); top-1/ms uses p50 per image."
        )
    if doc.get("reference") is not None:
        r = doc["reference"]
        text.append(
            f"agree %: share of images with the same top-1 class as {r['model']} on {r['runtime']} (which "
            f"predicts {r['distinct_predictions']} distinct class(es) on them)."
        )
    if doc.get("targets"):
        # a run's device rows are scored against the same model's host ONNX Runtime run (the bench stage)
        vs = targets_reference(doc) if doc.get("recipe") is None else HOST_ORT
        for table in (targets_markdown(doc["targets"], reference=targets_reference(doc)),
                      devices_markdown(doc["targets"], reference=vs)):  # fmt: skip
            text += ["", *table] if table else []
    if doc.get("plots"):
        text += ["", *(f"![{PLOTS.get(k, k)}]({p})" for k, p in doc["plots"].items())]
    if doc.get("notes"):
        text += ["", *(f"- {n}" for n in doc["notes"])]
    if doc.get("verdicts"):
        text += ["", *verdict.markdown(doc["verdicts"])]
    if doc.get("gates"):
        failed = [g for g in doc["gates"] if not g["passed"]]
        gates = sorted({g["gate"] for g in doc["gates"]})
        text += [
            "",
            f"Gates {', '.join(gates)}: " + (f"{len(failed)} failed" if failed else "all passed") + ".",
        ]
    return "\n".join(text) + "\n"


def write_run_report(run_dir: Path, recipe, status: dict[str, Any]) -> dict[str, Any]:
    """The run's report.json/report.md (and plots beside them) from the bench stage's measurement and the
    other stages' metrics."""
    run_dir = Path(run_dir)
    bench = status["bench"]["manifest"]
    measured = json.loads((run_dir / "bench" / bench["outputs"]["rows"]["file"]).read_text())
    stages = {
        name: {
            "metrics": s["manifest"]["metrics"],
            "wall_time_s": s["manifest"]["wall_time_s"],
            "cached": s["cached"],
        }
        for name, s in status.items()
    }
    rows = measured["rows"]
    plots = {k: p.name for k, p in write_plots(rows, run_dir).items()}  # beside report.json
    if "explain" in status:  # the explain stage's grid (its images and both models' predictions beside it)
        plots["gradcam"] = f"explain/{status['explain']['manifest']['outputs']['cam_grid']['file']}"
    drop_samples(rows)
    doc = document(
        environment=measured["environment"],
        settings=measured["settings"],
        baseline=measured["baseline"],
        data=measured["data"],
        models=measured["models"],
        rows=rows,
        gates=measured["gates"],
        notes=_run_notes(rows, stages, measured["environment"]),
        plots=plots,
        recipe=recipe.name,
        stages=stages,
        targets=(_run_targets(rows, stages) or []) + measured.get("devices", []) or None,
    )
    atomic_write_json(run_dir / "report.json", doc)
    atomic_write_text(run_dir / "report.md", markdown(doc))
    return doc


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run_targets(rows: list[dict], stages: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The export stage's target checks of int8.onnx, plus OpenVINO on the host; the host rows carry the bench
    stage's p50 (the one place a latency was measured on a target)."""
    exp = stages.get("export", {}).get("metrics", {}).get("int8")
    if not isinstance(exp, dict) or not exp.get("targets"):
        return None

    def p50(runtime: str) -> float | None:
        hit = [r for r in rows if r["model"] == "int8-qat" and r["runtime"] == runtime]
        return hit[0]["latency"]["p50_ms"] if hit else None

    onnx_rt, ir_rt = runtime_for("onnx"), runtime_for("ir")  # export checks the ONNX and the IR it makes
    ort = [t for t in exp["targets"] if t["runtime"] == onnx_rt.name]
    out = [{"model": "int8-qat", **t, "latency_ms": p50(onnx_rt.name) if t["target"] == "host" else None}
           for t in ort]  # fmt: skip
    if "openvino_agreement" in exp:
        host = next((t for t in ort if t["target"] == "host"), None)
        out.append({
            "model": "int8-qat", "target": "host", "title": host["title"] if host else "this machine",
            "how": "native", "kernel": f"precision {exp.get('openvino_precision')}", "runtime": ir_rt.name,
            "images": exp["test_images"], "agreement": exp["openvino_agreement"],
            "top1": exp.get("openvino_test_top1"), "reason": "", "runtime_version": _version(ir_rt.package),
            "cpu": host["cpu"] if host else {}, "wall_s": None, "latency_ms": p50(ir_rt.name),
        })  # fmt: skip
    others = [t for t in exp["targets"] if t["runtime"] != onnx_rt.name]
    out += [{"model": "int8-qat", **t, "latency_ms": None} for t in others]
    return out


WARNING = "WARNING: "  # notes that start so are shown above the table


def qat_below_ptq(rows: list[dict]) -> list[str]:
    """A QAT model that scores below the 2-second PTQ baseline on a runtime is not worth its training: say so
    first."""
    out = []
    for rt in dict.fromkeys(r["runtime"] for r in rows):
        q = [r for r in rows if r["runtime"] == rt and r["model"] == "int8-qat" and r.get("top1") is not None]
        p = [r for r in rows if r["runtime"] == rt and r["model"] == "int8-ptq" and r.get("top1") is not None]
        if q and p and q[0]["top1"] < p[0]["top1"]:
            out.append(
                f"{WARNING}QAT INT8 ends below the PTQ baseline on {rt}: top-1 {q[0]['top1']:.2f}% vs "
                f"{p[0]['top1']:.2f}%; fix: train QAT longer or with another schedule, or ship the PTQ model"
            )
    return out


def _run_notes(rows: list[dict], stages: dict[str, Any], env: dict[str, Any]) -> list[str]:
    macs = {round(r["gmacs"], 6) for r in rows if r.get("gmacs") is not None}
    notes = [
        *qat_below_ptq(rows),
        "GMACs are equal for FP32 and INT8 models"
        if len(macs) == 1
        else f"GMACs differ between models: {sorted(macs)}",
        "GMACs are counted from each ONNX graph; an INT8 graph does the MACs of its FP32 twin, so INT8 shows "
        "up as latency and size, not GFLOPs",
    ]
    exp = stages.get("export", {}).get("metrics", {})
    std = (exp.get("fp32") or {}).get("standard_table_gmacs")
    mine = next((r["gmacs"] for r in rows if r["model"] == "fp32" and r.get("gmacs")), None)
    if std and mine:
        notes.append(
            f"model.variant: {mine:.4f} GMACs at this input size, {mine / std:.2f}x the {std:.4f} of the "
            "arch's standard block table (both counted from exported graphs)"
        )
    for key, m in exp.items():
        if isinstance(m, dict) and m.get("targets_fp32_top1") is not None:
            n = max((t["images"] for t in m["targets"]), default=0)
            notes.append(
                f"targets: {key} checked on {n} test images (a seeded sample), where the FP32 model's top-1 "
                f"is {m['targets_fp32_top1']:.2f}%"
            )
        if isinstance(m, dict) and "ort_agreement" in m:
            ov = f", OpenVINO {100 * m['openvino_agreement']:.2f}%" if "openvino_agreement" in m else ""
            notes.append(
                f"{key}: ONNX Runtime agrees with torch on {100 * m['ort_agreement']:.2f}% of "
                f"{m['test_images']} test images{ov}"
            )
    accounts = stages.get("bench", {}).get("metrics", {}).get("op_account") or {}
    for key, by_runtime in accounts.items():  # measured by the bench stage, on the files export shipped
        for rt, acc in by_runtime.items():
            if acc.get("int8_time_share") is not None:
                notes.append(
                    f"{key} on {rt}: {100 * acc['int8_time_share']:.0f}% of kernel time in INT8 kernels "
                    f"(per-op profile: bench/{key}.ops.json)"
                )
    for name in ("finetune", "qat"):
        m = stages.get(name, {}).get("metrics", {})
        if "test_top1" in m:
            notes.append(f"{name}: torch test top-1 {m['test_top1']:.2f}% (val {m['val_top1']:.2f}%)")
    if not native_bf16(set(env.get("isa_flags", []))):
        notes.append("no native bf16 on this CPU: OpenVINO runs FP32 in f32 here, no bf16 row")
    return notes
