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
        table.append(entry)
    result = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": doc["environment"], "threads": args.threads,
              "test_images": doc["data"]["images"], "val": summary["val_top1"], "chosen": summary["chosen"],
              "export_check": summary["export_check"], "table": table}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result) + "\n")
    print(_markdown(result))


def _markdown(res: dict) -> str:
    env = res["environment"]
    md = [
        "# ResNeXt50 + ResNeXt50 (gradual unfreezing) + ResNeXt50-ViT hybrid, linear ensemble",
        "",
        f"CPU: {env['cpu_model']} (`{env['cpu_name']}`; {', '.join(env['isa_flags'])}); ONNX Runtime, "
        f"{res['threads']} threads, batch 1. Written by `benchmarks/resnext_vit_ensemble.py` from the "
        "recipes `recipes/resnext_vit_ensemble{,_plain,_unfreeze}.yaml` (built-in Fashion-MNIST, 40 px, "
        f"30 images per class, 3-6 epochs from initialisation); test split: {res['test_images']} images. "
        f"Combiner chosen on validation: {res['chosen']}.",
        "",
        "| model | published top-1 (224 px, ImageNet weights) | FP32 top-1 | INT8 top-1 | FP32 GMACs "
        "| INT8 MAC share | FP32 p50 ms | INT8 p50 ms | INT8 speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in res["table"]:
        f, q = e["fp32"], e["int8"]
        md.append(
            f"| {e['role']} | {e['published_top1']:.1f} | {f['test_top1']:.2f} | {q['test_top1']:.2f} "
            f"| {f['gmacs']:.3f} | {100 * (q['int8_mac_share'] or 0):.1f}% | {f['p50_ms']:.2f} "
            f"| {q['p50_ms']:.2f} | {f['p50_ms'] / q['p50_ms']:.2f}x |"
        )
    return "\n".join(md)


if __name__ == "__main__":
    main()
