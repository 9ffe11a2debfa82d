"""The shape of a published ablation table (top-1, macro precision/recall/F1, size, speed per variant), at a
small scale on the built-in Fashion-MNIST, made by ``edgepipe sweep``.

    .venv/bin/python benchmarks/ablation.py [--set KEY=V1,V2 ...] [--epochs 6] [--limit-per-class 40]
        [--out artifacts/ablation] [--results benchmarks/results]

Base: recipes/smoke.yaml with finetune.epochs, data.limit_per_class and stages [finetune, qat, export,
bench] (ONNX Runtime only) set here. Default grid: model.attention=se,eca x model.head=linear,arcmargin.
The script
runs the ``edgepipe sweep`` command (so a killed run resumes where it stopped: rerun it) and copies its
sweep.md, sweep.json and plot to RESULTS/ablation.{md,json,png}. At this scale (a few hundred 32x32
images, a few epochs) differences between variants are within noise; the table shows the shape, not a
ranking.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from edgepipe.artifacts import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


DEFAULT_GRID = ["model.attention=se,eca", "model.head=linear,arcmargin"]


def write_recipe(args: argparse.Namespace) -> Path:
    raw = yaml.safe_load((ROOT / "recipes" / "smoke.yaml").read_text())
    raw["name"] = "ablation"
    raw["stages"] = ["finetune", "qat", "export", "bench"]
    raw["data"]["limit_per_class"] = args.limit_per_class
    raw["finetune"] = {**raw["finetune"], "epochs": args.epochs, "patience": args.epochs}
    raw["export"] = {**raw.get("export", {}), "openvino": False}
    raw["bench"] = {**raw.get("bench", {}), "runtimes": ["onnxruntime"]}
    path = Path(args.out) / "ablation.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=V1,V2", help="default: see above")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--limit-per-class", type=int, default=40)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "ablation"))
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    recipe = write_recipe(args)
    sets = args.sets or DEFAULT_GRID
    cmd = [sys.executable, "-m", "edgepipe.cli", "sweep", str(recipe), "--out", args.out]
    for s in sets:
        cmd += ["--set", s]
    shown = "edgepipe sweep " + " ".join(f"--set {s}" for s in sets)
    print("running:", shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    out, results = Path(args.out), Path(args.results)
    if not (out / "sweep.json").exists():
        sys.exit(rc or 1)
    doc = json.loads((out / "sweep.json").read_text())
    doc["command"] = f"benchmarks/ablation.py ({shown}; finetune.epochs {args.epochs}, "
    doc["command"] += f"data.limit_per_class {args.limit_per_class}, base recipes/smoke.yaml)"
    for v in doc["variants"]:
        run = Path(v["run"]).resolve()
        v["run"] = str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run)
    atomic_write_json(results / "ablation.json", doc)
    md = (out / "sweep.md").read_text().replace("(sweep_accuracy_vs_latency.png)", "(ablation.png)")
    head = (
        f"Made by `{doc['command']}`. A few hundred 32x32 images and {args.epochs} epochs: differences "
        "between variants are within noise here; the table shows the shape of an ablation, not a ranking.\n\n"
    )
    first, _, rest = md.partition("\n\n")
    atomic_write_text(results / "ablation.md", f"{first}\n\n{head}{rest}")
    png = out / "sweep_accuracy_vs_latency.png"
    if png.exists():
        (results / "ablation.png").write_bytes(png.read_bytes())
    sys.exit(rc)


if __name__ == "__main__":
    main()
