"""The targets table of finished runs' export stages, one row per run and target: what `int8.onnx` agreed on
with the QAT torch model on each CPU's own kernels (edgepipe/targets), with top-1 and the FP32 top-1 on the
same images. For runs built only through export (no bench stage, so no run report).

    .venv/bin/python benchmarks/targets_table.py RUN_DIR... --out benchmarks/results/NAME

Writes NAME.json (the export metrics it read, plus the CPU) and NAME.md.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from edgepipe.bench.timing import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path, help="result path without suffix")
    args = ap.parse_args()
    runs = {}
    for run in args.runs:
        exp = json.loads((run / "export" / "manifest.json").read_text())["metrics"]["int8"]
        qat = json.loads((run / "qat" / "manifest.json").read_text())["metrics"]
        fp = json.loads((run / "finetune" / "manifest.json").read_text())["metrics"]
        keep = ("numerics", "ort_test_top1", "ort_agreement", "openvino_agreement", "targets",
                "targets_fp32_top1")
        runs[run.name] = {k: exp.get(k) for k in keep} | {"qat_torch_test_top1": qat["test_top1"],
                                                           "fp32_torch_test_top1": fp["test_top1"]}
    doc = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "environment": environment(), "runs": runs}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    env = doc["environment"]
    md = [f"# Targets of {', '.join(runs)}", "",
          f"CPU: {env['cpu_model']} (`{env['cpu_name']}`; {', '.join(env['isa_flags'])}). Written by "
          "`benchmarks/targets_table.py` from each run's export manifest; agreement with the QAT torch "
          "model.", "",
          "| run | numerics | FP32 torch top-1 | QAT torch top-1 | INT8 ORT top-1 (host, all) | target "
          "| runtime | how | images | agree % | top-1 % | FP32 top-1 on those images |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        for t in r["targets"]:
            agree = "—" if t["agreement"] is None else f"{100 * t['agreement']:.2f}"
            top1 = "—" if t["top1"] is None else f"{t['top1']:.2f}"
            md.append(f"| {name} | {r['numerics']} | {r['fp32_torch_test_top1']:.2f} "
                      f"| {r['qat_torch_test_top1']:.2f} | {r['ort_test_top1']:.2f} | {t['target']} "
                      f"| {t['runtime']} | {t['how']} | {t['images']} | {agree} | {top1} "
                      f"| {r['targets_fp32_top1']:.2f} |")
        md.append(f"| {name} | {r['numerics']} | | | | host (whole test split) | openvino | native | all "
                  f"| {100 * r['openvino_agreement']:.2f} | | |")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
