"""Times the main job a new user runs first (`make build` = `edgepipe build recipes/mnv3_qat.yaml`) from
scratch and records what it printed, for the README: wall time of the whole build, each stage's time from its
manifest, the run's report, and the CPU it ran on.

    .venv/bin/python benchmarks/main_job.py [--recipe recipes/mnv3_qat.yaml] [--out /tmp/main_job]

Writes benchmarks/results/main_job_<cpu>.{json,md} (e.g. main_job_amd-epyc-zen5.md). The build runs with
--force into a scratch folder so no cached stage shortens it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgepipe.bench.timing import cpu_name, environment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/mnv3_qat.yaml", help="relative to the repository root")
    ap.add_argument("--out", default="/tmp/edgepipe-main-job")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    cmd = [sys.executable, "-m", "edgepipe.cli", "build", args.recipe, "--out", args.out, "--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                          env={**os.environ, "EDGEPIPE_PROGRESS": "0"})
    wall = time.perf_counter() - t0
    print(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.exit(f"error: the build failed (exit {proc.returncode}); nothing recorded")

    import yaml

    name = yaml.safe_load((ROOT / args.recipe).read_text())["name"]
    run = Path(args.out) / name
    stages = {}
    for manifest in sorted(run.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        stages[manifest.parent.name] = m.get("wall_time_s")
    report_md = (run / "report.md").read_text()
    env = environment()
    doc = {
        "schema": "edgepipe.main_job/1",
        "recipe": args.recipe,
        "command": f"edgepipe build {args.recipe}",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 1),
        "stage_wall_time_s": stages,
        "environment": env,
        "report": json.loads((run / "report.json").read_text()),
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"main_job_{cpu_name()}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stage_line = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items() if v is not None)
    stem.with_suffix(".md").write_text(
        f"# Main job: `{doc['command']}`\n\n"
        f"CPU: {env['cpu_model']} ({cpu_name()}; {', '.join(env['isa_flags'])}), {env['logical_cores']} "
        f"logical cores. Finished {doc['finished']}.\n\n"
        f"**Wall time of the whole build: {wall / 60:.1f} min** (stages: {stage_line}).\n\n"
        f"What the run wrote to `report.md`:\n\n{report_md}\n"
    )
    print(f"wrote {stem}.json and .md: {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
