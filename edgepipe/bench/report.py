"""report.json / report.md: all models x runtimes side by side, with the environment they ran on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_write_json, atomic_write_text

SCHEMA = "edgepipe.report/1"


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def speedups(rows: list[dict]) -> None:
    """Add speedup_vs_fp32: latency of the same runtime's FP32 row over this row's (same batch)."""
    base = {
        (r["runtime"], r["latency"]["batch_size"]): r["latency"]["p50_ms"]
        for r in rows
        if r["model"] == "fp32"
    }
    for r in rows:
        ref = base.get((r["runtime"], r["latency"]["batch_size"]))
        r["speedup_vs_fp32"] = ref / r["latency"]["p50_ms"] if ref else None


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| model | runtime | test top-1 % | GMACs | GFLOPs | top-1/GFLOPs | p50 ms | p90 ms "
        "| speed-up vs FP32 | size MB | INT8 MAC share |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        lat = r["latency"]
        lines.append(
            f"| {r['model']} | {r['runtime_label']} | {_fmt(r.get('top1'))} | {_fmt(r['gmacs'], 4)} | "
            f"{_fmt(r['gflops'], 4)} | {_fmt(r.get('efficiency_top1_per_gflop'), 1)} | "
            f"{_fmt(lat['p50_ms'], 3)} | "
            f"{_fmt(lat['p90_ms'], 3)} | {_fmt(r.get('speedup_vs_fp32'))}x | {_fmt(r['size_mb'])} | "
            f"{_fmt(100 * r['int8_mac_share'], 0)}% |"
        )
    return head + "\n".join(lines) + "\n"


def write_report(
    run_dir: Path, recipe_name: str, rows: list[dict], env: dict, stages: dict[str, Any], notes: list[str]
) -> dict:
    report = {
        "schema": SCHEMA,
        "recipe": recipe_name,
        "environment": env,
        "stages": stages,
        "rows": rows,
        "notes": notes,
    }
    atomic_write_json(Path(run_dir) / "report.json", report)
    md = [f"# edgepipe report: {recipe_name}", ""]
    md.append(markdown_table(rows))
    md.append(
        f"Latency at batch {rows[0]['latency']['batch_size'] if rows else '?'}, "
        f"{rows[0].get('threads', '?') if rows else '?'} threads; "
        f"CPU: {env.get('cpu_model', '?')} ({', '.join(env.get('isa_flags', []))}). "
        "GMACs are counted from each ONNX graph; an INT8 graph does the MACs of its FP32 twin, "
        "so INT8 shows up as latency and size, not GFLOPs."
    )
    md += ["", *[f"- {n}" for n in notes]]
    atomic_write_text(Path(run_dir) / "report.md", "\n".join(md) + "\n")
    return report


def write_run_report(run_dir: Path, recipe, status: dict[str, Any]) -> dict:
    """The run's report.json/report.md from the bench rows and the other stages' metrics."""
    import json

    bench = status["bench"]["manifest"]
    rows_doc = json.loads((Path(run_dir) / "bench" / bench["outputs"]["rows"]["file"]).read_text())
    stages = {
        name: {
            "metrics": s["manifest"]["metrics"],
            "wall_time_s": s["manifest"]["wall_time_s"],
            "cached": s["cached"],
        }
        for name, s in status.items()
    }
    rows = rows_doc["rows"]
    notes = []
    macs = {round(r["gmacs"], 6) for r in rows}
    notes.append(
        "GMACs are equal for FP32 and INT8 models"
        if len(macs) == 1
        else f"GMACs differ between models: {sorted(macs)}"
    )
    exp = stages.get("export", {}).get("metrics", {})
    for key, m in exp.items():
        if isinstance(m, dict) and "ort_agreement" in m:
            ov = f", OpenVINO {100 * m['openvino_agreement']:.2f}%" if "openvino_agreement" in m else ""
            notes.append(
                f"{key}: ONNX Runtime agrees with torch on {100 * m['ort_agreement']:.2f}% of "
                f"{m['test_images']} test images{ov}"
            )
            for rt, acc in (m.get("op_account") or {}).items():
                if acc.get("int8_time_share") is not None:
                    notes.append(
                        f"{key} on {rt}: {100 * acc['int8_time_share']:.0f}% of kernel time in INT8 kernels "
                        f"(per-op profile: export/{key}.ops.json)"
                    )
    for name in ("finetune", "qat"):
        m = stages.get(name, {}).get("metrics", {})
        if "test_top1" in m:
            notes.append(f"{name}: torch test top-1 {m['test_top1']:.2f}% (val {m['val_top1']:.2f}%)")
    if not any(f in rows_doc["environment"].get("isa_flags", []) for f in ("avx512_bf16", "amx_bf16")):
        notes.append("no native bf16 on this CPU: OpenVINO runs FP32 in f32 here, no bf16 row")
    return write_report(run_dir, recipe.name, rows, rows_doc["environment"], stages, notes)
