"""The published three-model set-up, at this machine's scale: a plain ResNeXt50-32x4d, a gradually-unfrozen
one and a ResNeXt50 with a ViT-tiny block on layer 4 (model.hybrid: vit), combined by a linear layer over
their concatenated logits (`edgepipe ensemble --combine linear`); FP32 and INT8 in one table.

    .venv/bin/python benchmarks/resnext_vit_ensemble.py --runs artifacts/ens \
        --out benchmarks/results/resnext_vit_ensemble_NAME

Builds the three member recipes (cached stages are reused), then the ensemble, through the library's own
``pipeline.build`` and ``experiments.ensemble.build_ensemble``; writes OUT.json and OUT.md (with the CPU).
The published numbers (87.3 / 86.0 / 87.7% alone, 89.0% ensembled) are on its own 224-px photo set from
ImageNet weights: they are printed beside ours for the shape, not as a target this scale can reach.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from edgepipe.experiments.ensemble import BenchSettings, build_ensemble
from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {  # recipe -> (role, published top-1 alone)
    "resnext_vit_ensemble_plain": ("ResNeXt50-32x4d", 87.3),
    "resnext_vit_ensemble_unfreeze": ("ResNeXt50-32x4d, gradual unfreezing", 86.0),
    "resnext_vit_ensemble": ("ResNeXt50-32x4d + ViT-tiny block on layer 4", 87.7),
}
PUBLISHED_ENSEMBLE = 89.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("artifacts/resnext_vit_ensemble"))
    ap.add_argument("--out", required=True, type=Path, help="result path without suffix")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runs = []
    for name in MEMBERS:
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        build(recipe, args.runs)
        runs.append(args.runs / recipe.name)
    doc = build_ensemble(runs, "linear", args.runs / "ensemble",
                         BenchSettings(threads=args.threads, warmup=5, min_iters=30, min_seconds=1.0))
    summary = doc["stages"]["ensemble"]["metrics"]
    rows = {r["model"]: r for r in doc["rows"]}
    table = []
    for name, (role, published) in [*MEMBERS.items(), ("ensemble", ("linear ensemble of the three", None))]:
        entry = {"member": name, "role": role, "published_top1": published or PUBLISHED_ENSEMBLE}
        for prec in ("fp32", "int8"):
            row = rows[f"{name} {prec}"]
            entry[prec] = {"test_top1": row["top1"], "p50_ms": row["latency"]["p50_ms"],
                           "gmacs": row["gmacs"], "int8_mac_share": row["int8_mac_share"],
                           "size_mb": row["size_mb"]}
        if name != "ensemble":
            entry["int8_agreement"] = _lowest_agreement(args.runs / name)
        table.append(entry)
    result = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": doc["environment"], "threads": args.threads,
              "test_images": doc["data"]["images"], "val": summary["val_top1"], "chosen": summary["chosen"],
              "export_check": summary["export_check"], "table": table,
              "hybrid": _hybrid(args.runs / "resnext_vit_ensemble")}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result) + "\n")
    print(_markdown(result))


def _lowest_agreement(run: Path) -> dict[str, float]:
    """Per runtime, the lowest agreement (0..1) of a member's int8.onnx with its QAT torch model over the
    export stage's checks: the host run and every target (native or emulated)."""
    m = json.loads((run / "export" / "manifest.json").read_text())["metrics"]["int8"]
    low = {"onnxruntime": m["ort_agreement"]}
    if m.get("openvino_agreement") is not None:
        low["openvino"] = m["openvino_agreement"]
    for t in m.get("targets", []):
        if t.get("agreement") is not None:
            low[t["runtime"]] = min(low.get(t["runtime"], 1.0), t["agreement"])
    return low


def _hybrid(run: Path) -> dict:
    """The hybrid member's own run report (split to bench): its batch-1 bench rows and its target checks."""
    rep = json.loads((run / "report.json").read_text())
    rows = [
        {"model": r["model"], "runtime": r["runtime_label"], "p50_ms": r["latency"]["p50_ms"],
         "speedup": r.get("speedup"), "speedup_paired": r.get("speedup_paired"),
         "baseline": r.get("baseline"), "top1": r["top1"], "size_mb": r["size_mb"]}
        for r in rep["rows"] if r["batch_size"] == 1
    ]  # fmt: skip
    keys = ("model", "target", "runtime", "how", "kernel", "images", "agreement", "top1")
    targets = [{k: t.get(k) for k in keys} for t in rep.get("targets", [])]
    ops = json.loads((run / "bench" / "int8.ops.json").read_text())  # the bench stage's per-op profiles
    account = {rt: {"int8_time_share": a.get("int8_time_share"), "by_op_type": _shares(a)}
               for rt, a in ops.items() if isinstance(a, dict)}  # fmt: skip
    return {"test_images": rep["data"]["images"], "rows": rows, "targets": targets, "int8_time": account}


def _markdown(res: dict) -> str:
    env = res["environment"]
    md = [
        "# ResNeXt50 + ResNeXt50 (gradual unfreezing) + ResNeXt50-ViT hybrid, linear ensemble",
        "",
        f"CPU: {env['cpu_model']} (`{env['cpu_name']}`; {', '.join(env['isa_flags'])}); ONNX Runtime, "
        f"{res['threads']} threads, batch 1. Written by `benchmarks/resnext_vit_ensemble.py` from the "
        "recipes `recipes/resnext_vit_ensemble{,_plain,_unfreeze}.yaml` (built-in Fashion-MNIST, 40 px, "
        "150 training images per class, 12 epochs from initialisation, 2 of QAT); "
        f"test split: {res['test_images']} images. Combiner chosen on validation, each precision's on "
        f"its own members' logits: {_chosen(res['chosen'])}. "
        "INT8 speed-up: each model's FP32 p50 over its INT8 p50, measured in one run. INT8 agreement: the "
        "lowest, over the export stage's checks (this machine and every target, native or emulated), of the "
        "share of test images on which int8.onnx predicts the class its QAT torch model predicts.",
        "",
        "| model | published top-1 (224 px, ImageNet weights) | FP32 top-1 | INT8 top-1 "
        "| INT8 agreement (ONNX Runtime / OpenVINO) | FP32 GMACs | INT8 MAC share | FP32 p50 ms "
        "| INT8 p50 ms | INT8 speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in res["table"]:
        f, q = e["fp32"], e["int8"]
        agree = e.get("int8_agreement")
        cell = " / ".join(_pct(agree.get(k)) for k in ("onnxruntime", "openvino")) if agree else "—"
        md.append(
            f"| {e['role']} | {e['published_top1']:.1f} | {f['test_top1']:.2f} | {q['test_top1']:.2f} "
            f"| {cell} | {f['gmacs']:.3f} | {100 * (q['int8_mac_share'] or 0):.1f}% | {f['p50_ms']:.2f} "
            f"| {q['p50_ms']:.2f} | {f['p50_ms'] / q['p50_ms']:.2f}x |"
        )
    hy = res.get("hybrid")
    if hy:
        md += _hybrid_markdown(hy)
    return "\n".join(md)


def _hybrid_markdown(hy: dict) -> list[str]:
    md = [
        "",
        f"## The hybrid member's own run (split to bench; {hy['test_images']} test images, batch 1)",
        "",
        "| model | runtime | p50 ms | speed-up (baseline) | paired speed-up | top-1 | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in hy["rows"]:
        paired = f"{r['speedup_paired']:.2f}x" if r.get("speedup_paired") else "—"
        base = r.get("baseline") or {}
        vs = f"{base.get('model', '')} {base.get('runtime_label') or ''}".strip()
        md.append(
            f"| {r['model']} | {r['runtime']} | {r['p50_ms']:.2f} | {r['speedup']:.2f}x ({vs}) "
            f"| {paired} | {r['top1']:.2f} | {r['size_mb']:.1f} |"
        )
    md += ["", "| model | runtime | target | how | kernel | images | agreement | INT8 top-1 |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in hy["targets"]:
        md.append(
            f"| {t['model']} | {t['runtime']} | {t['target']} | {t['how']} | {t['kernel']} "
            f"| {t['images']} | {_pct(t['agreement'])} | {t['top1']:.2f} |"
        )
    for rt, a in hy.get("int8_time", {}).items():
        if a.get("int8_time_share") is None:
            continue
        top = sorted((a.get("by_op_type") or {}).items(), key=lambda kv: -kv[1])
        shares = ", ".join(f"{op} {_pct(v)}" for op, v in top if v >= 0.001)
        md += ["", f"INT8 (QAT) on {rt}, kernel time by op (its profiler): {_pct(a['int8_time_share'])} "
                   f"in integer kernels; {shares}."]  # fmt: skip
    return md


def _shares(account: dict) -> dict[str, float]:
    """Kernel time share per op type (ONNX Runtime) or per op and kernel (OpenVINO's exec types)."""
    if account.get("time_share_by_op_type"):
        return account["time_share_by_op_type"]
    times = account.get("time_by_exec_type_us") or {}
    total = sum(times.values()) or 1.0
    return {k: v / total for k, v in times.items()}


def _chosen(chosen: dict | str) -> str:
    return chosen if isinstance(chosen, str) else "; ".join(f"{p.upper()} {c}" for p, c in chosen.items())


def _pct(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.2f}%"


if __name__ == "__main__":
    main()
