"""Orders the stages, skips cached ones, chains each stage's outputs to the next, writes the report.

A stage's cache key hashes its recipe slice, the content hashes of its inputs and the package versions
(as Olive's cache and DVC's lock file do); it is done only when its manifest.json exists.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from edgepipe.artifacts import (
    MANIFEST,
    atomic_write_json,
    hash_json,
    package_versions,
    read_manifest,
    sha256_file,
    staging_dir,
)
from edgepipe.errors import RecipeError, StageError
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext

log = logging.getLogger(__name__)

ORDER = ("split", "finetune", "qat", "export", "ptq", "bench")


def stage_module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"edgepipe.stages.{name}")


def plan(recipe: Recipe) -> list[str]:
    selected = ["split", *[s for s in ORDER if s in recipe.stages]]
    produced: set[str] = set()
    for name in selected:
        mod = stage_module(name)
        missing = [n for n in mod.needs if n not in produced]
        if missing:
            raise RecipeError(
                f"stages: '{name}' needs {', '.join(missing)} from a stage not listed; fix: add "
                f"the stage that makes it to recipe stages (order: {', '.join(ORDER[1:])})"
            )
        produced |= set(_OUTPUTS.get(name, ()))
    return selected


# What each stage hands on (checked by plan(), so a recipe that drops a needed stage fails before any work).
_OUTPUTS = {
    "split": ("split",),
    "finetune": ("checkpoint", "history"),
    "qat": ("qat_checkpoint",),
    "export": ("onnx_fp32", "onnx_int8", "ir_fp32", "ir_int8"),
    "ptq": ("onnx_ptq",),
    "bench": ("rows",),
}


def _key(name: str, recipe: Recipe, inputs: dict[str, dict]) -> str:
    mod = stage_module(name)
    used = {n: inputs[n]["sha256"] for n in (*mod.needs, *getattr(mod, "optional", ())) if n in inputs}
    return hash_json(
        {"stage": name, "config": mod.config(recipe), "inputs": used, "versions": package_versions()}
    )


def _run_stage(name: str, recipe: Recipe, run_dir: Path, inputs: dict[str, dict], key: str) -> dict:
    mod = stage_module(name)
    final = run_dir / name
    t0 = time.perf_counter()
    with staging_dir(final) as tmp:
        ctx = StageContext(
            recipe=recipe,
            out_dir=tmp,
            run_dir=run_dir,
            inputs={n: Path(v["path"]) for n, v in inputs.items()},
        )
        result = mod.run(ctx)
        outputs = {}
        for out_name, rel in result.outputs.items():
            path = tmp / rel
            if not path.exists():
                raise StageError(f"stage {name} did not write its output {rel}; this is a bug in edgepipe")
            outputs[out_name] = {"file": rel, "sha256": sha256_file(path)}
        manifest = {
            "stage": name,
            "key": key,
            "config": mod.config(recipe),
            "inputs": {
                n: inputs[n]["sha256"] for n in (*mod.needs, *getattr(mod, "optional", ())) if n in inputs
            },
            "outputs": outputs,
            "metrics": result.metrics,
            "versions": package_versions(),
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def _register(inputs: dict[str, dict], stage_dir: Path, manifest: dict) -> None:
    for out_name, o in manifest["outputs"].items():
        inputs[out_name] = {"path": str(stage_dir / o["file"]), "sha256": o["sha256"]}


def build(
    recipe: Recipe, out: Path, force: bool = False, from_stage: str | None = None, only: str | None = None
) -> dict[str, Any]:
    """Run the recipe's stages in order; returns {stage: {"cached": bool, "manifest": ...}}."""
    stages = plan(recipe)
    for flag, value in (("--from", from_stage), ("--only", only)):
        if value is not None and value not in stages:
            raise RecipeError(
                f"{flag} {value}: not a stage of this recipe; fix: use one of {', '.join(stages)}"
            )
    run_dir = Path(out) / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, dict] = {}
    status: dict[str, Any] = {}
    start = stages.index(from_stage) if from_stage else len(stages)
    for i, name in enumerate(stages):
        stage_dir = run_dir / name
        manifest = read_manifest(stage_dir)
        if only is not None and i > stages.index(only):
            break  # --only runs one stage: later ones are neither run nor required
        if only is not None and name != only:
            if manifest is None:
                raise StageError(
                    f"--only {only} needs the output of stage '{name}', which has not run; fix: run "
                    "without --only first"
                )
            _register(inputs, stage_dir, manifest)
            status[name] = {"cached": True, "manifest": manifest}
            continue
        key = _key(name, recipe, inputs)
        rerun = force or i >= start or only == name
        if manifest is not None and manifest.get("key") == key and not rerun:
            log.info("stage %-8s cached (%s)", name, stage_dir)
            status[name] = {"cached": True, "manifest": manifest}
        else:
            log.info("stage %-8s running -> %s", name, stage_dir)
            manifest = _run_stage(name, recipe, run_dir, inputs, key)
            log.info("stage %-8s done in %.1fs", name, manifest["wall_time_s"])
            status[name] = {"cached": False, "manifest": manifest}
        _register(inputs, stage_dir, manifest)
    if "bench" in status:
        from edgepipe.bench.report import write_run_report

        write_run_report(run_dir, recipe, status)
    return status
