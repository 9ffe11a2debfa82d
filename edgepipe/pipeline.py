"""Orders the stages, skips cached ones, chains each stage's outputs to the next, writes the report.

A stage's cache key hashes its recipe slice, the content hashes of its inputs and the package versions
(as Olive's cache and DVC's lock file do); it is done only when its manifest.json exists.

Under torchrun every rank runs this loop with the same decisions: stages marked ``distributed`` (finetune,
qat) run on all ranks, the others on rank 0 alone; rank 0 alone publishes, and a barrier after each stage
lets the other ranks read what it published. They leave once no distributed stage is left.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgepipe import stages
from edgepipe.artifacts import (
    MANIFEST,
    atomic_write_json,
    hash_json,
    package_versions,
    read_manifest,
    run_lock,
    sha256_file,
    staging_dir,
)
from edgepipe.errors import RecipeError, StageError
from edgepipe.models.registry import refusal
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec
from edgepipe.train import distributed as ddp
from edgepipe.train.resume import discard as discard_partial
from edgepipe.train.resume import partial_dir

log = logging.getLogger(__name__)


def plan(recipe: Recipe) -> list[str]:
    """The stages this recipe runs, in order. A recipe naming an unknown stage, dropping a stage another
    needs, or that the model registry cannot serve (qat or a later stage with an arch that has no quantizable
    twin, width_mult on an arch without it) fails here, before any stage runs."""
    listable = stages.listable()
    listed = recipe.stages if recipe.stages is not None else listable
    for i, name in enumerate(listed):
        if name not in listable:
            near = difflib.get_close_matches(name, listable, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"use {', '.join(listable)}"
            raise RecipeError(
                f"stages.{i}: {name!r} is not one of {', '.join(repr(n) for n in listable)}; fix: {hint}"
            )
    m = recipe.model  # what the model registry cannot serve, named before the needs (one line, with the fix)
    listed_known = tuple(n for n in listed if n in listable)
    why = refusal(
        m.arch, listed_known, m.width_mult, m.pretrained, m.attention, m.fusion, m.variant, m.hybrid
    )
    if why is not None:
        raise RecipeError(why)
    selected = [n for n in stages.order() if stages.get(n).always or n in listed]
    produced: set[str] = set()
    for name in selected:
        spec = stages.get(name)
        missing = [n for n in spec.needs if n not in produced]
        if missing:
            raise RecipeError(
                f"stages: '{name}' needs {', '.join(missing)} from a stage not listed; fix: add "
                f"the stage that makes it to recipe stages (order: {', '.join(listable)})"
            )
        produced |= set(spec.outputs)
    for name in selected:
        check = stages.get(name).check
        if check is not None:
            check(recipe)
    return selected


def _inputs_used(spec: StageSpec, inputs: dict[str, dict]) -> dict[str, str]:
    return {n: inputs[n]["sha256"] for n in (*spec.needs, *spec.optional) if n in inputs}


def _key(name: str, recipe: Recipe, inputs: dict[str, dict]) -> str:
    spec = stages.get(name)
    return hash_json(
        {
            "stage": name,
            "config": spec.config(recipe),
            "inputs": _inputs_used(spec, inputs),
            "versions": package_versions(),
        }
    )


def _context(name: str, recipe: Recipe, run_dir: Path, inputs: dict, key: str, out: Path, resume: bool):
    return StageContext(
        recipe=recipe,
        out_dir=out,
        run_dir=run_dir,
        inputs={n: Path(v["path"]) for n, v in inputs.items()},
        key=key,
        resume=resume,
        partial_dir=partial_dir(run_dir / name),
    )


def _run_on_rank(name: str, recipe: Recipe, run_dir: Path, inputs: dict, key: str, resume: bool) -> dict:
    """A rank other than 0: train with the others if the stage is distributed, then read rank 0's result."""
    if stages.get(name).distributed:
        with tempfile.TemporaryDirectory() as scratch:  # such a rank writes nothing; never into the run
            stages.get(name).run(_context(name, recipe, run_dir, inputs, key, Path(scratch), resume))
    ddp.barrier()
    manifest = read_manifest(run_dir / name)
    if manifest is None or manifest.get("key") != key:
        raise StageError(f"stage {name}: rank 0 published no result for this run; see rank 0's error")
    return manifest


def _run_stage(
    name: str,
    recipe: Recipe,
    run_dir: Path,
    inputs: dict[str, dict],
    key: str,
    resume: bool = False,
    shared: bool = False,
) -> dict:
    """Run one stage; ``shared``: other torchrun ranks are still in the loop and wait for its result."""
    if not ddp.is_main():
        return _run_on_rank(name, recipe, run_dir, inputs, key, resume)
    spec = stages.get(name)
    final = run_dir / name
    t0 = time.perf_counter()
    with staging_dir(final) as tmp:
        result = spec.run(_context(name, recipe, run_dir, inputs, key, tmp, resume))
        undeclared = sorted(set(result.outputs) - set(spec.outputs))
        if undeclared:
            raise StageError(
                f"stage {name} handed on {', '.join(undeclared)}, not in its STAGE.outputs; this is a bug "
                "in edgepipe"
            )
        outputs = {}
        for out_name, rel in result.outputs.items():
            path = tmp / rel
            if not path.exists():
                raise StageError(f"stage {name} did not write its output {rel}; this is a bug in edgepipe")
            outputs[out_name] = {"file": rel, "sha256": sha256_file(path)}
        manifest = {
            "stage": name,
            "key": key,
            "config": spec.config(recipe),
            "inputs": _inputs_used(spec, inputs),
            "outputs": outputs,
            "metrics": result.metrics,
            "versions": package_versions(),
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    discard_partial(final)  # published: its training state is no longer needed
    if shared:
        ddp.barrier()
    return manifest


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a published file (never rewritten in place: stages publish by os.replace), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _adopt(name: str, key: str, stage_dir: Path, reuse_from: Sequence[Path]) -> tuple[dict, Path] | None:
    """Another run's finished stage with this very key (same config slice, inputs' hashes and package
    versions, hence the same result): copy it into this run instead of recomputing it (a sweep's variants)."""
    for other in reuse_from:
        src = Path(other) / name
        if src.resolve() == stage_dir.resolve():
            continue
        found = read_manifest(src)
        if found is None or found.get("key") != key:
            continue
        try:
            with staging_dir(stage_dir) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
                copied = read_manifest(tmp)
                if copied is None or copied.get("key") != key:
                    raise _Replaced
        except _Replaced:  # the other run republished that stage while we copied: try the next
            continue
        return copied, src
    return None


class _Replaced(Exception):
    pass


def _register(inputs: dict[str, dict], stage_dir: Path, manifest: dict) -> None:
    for out_name, o in manifest["outputs"].items():
        inputs[out_name] = {"path": str(stage_dir / o["file"]), "sha256": o["sha256"]}


def build(
    recipe: Recipe,
    out: Path,
    force: bool = False,
    from_stage: str | None = None,
    only: str | None = None,
    resume: bool = False,
    reuse_from: Sequence[Path] = (),
) -> dict[str, Any]:
    """Run the recipe's stages in order; returns {stage: {"cached": bool, "manifest": ...}}.

    ``resume`` continues a killed finetune or qat from its last saved epoch (see train/resume.py).
    ``reuse_from``: other run folders (a sweep's variants) whose finished stages are copied in when their
    cache key equals this run's (status then says ``reused_from``); not under torchrun.
    """
    with ddp.session():
        return _build(recipe, out, force, from_stage, only, resume, reuse_from)


def _build(
    recipe: Recipe,
    out: Path,
    force: bool,
    from_stage: str | None,
    only: str | None,
    resume: bool,
    reuse_from: Sequence[Path] = (),
) -> dict[str, Any]:
    selected = plan(recipe)
    for flag, value in (("--from", from_stage), ("--only", only)):
        if value is not None and value not in selected:
            raise RecipeError(
                f"{flag} {value}: not a stage of this recipe; fix: use one of {', '.join(selected)}"
            )
    run_dir = Path(out) / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    # rank 0 alone holds the run folder: the other ranks of the same torchrun follow its decisions
    with run_lock(run_dir) if ddp.is_main() else contextlib.nullcontext():
        return _build_locked(recipe, run_dir, selected, force, from_stage, only, resume, reuse_from)


def _build_locked(
    recipe: Recipe,
    run_dir: Path,
    selected: list[str],
    force: bool,
    from_stage: str | None,
    only: str | None,
    resume: bool,
    reuse_from: Sequence[Path] = (),
) -> dict[str, Any]:
    inputs: dict[str, dict] = {}
    status: dict[str, Any] = {}
    start = selected.index(from_stage) if from_stage else len(selected)
    last_shared = max((i for i, n in enumerate(selected) if stages.get(n).distributed), default=-1)
    for i, name in enumerate(selected):
        if i > last_shared and not ddp.is_main():
            break  # no training left: rank 0 runs the rest alone
        stage_dir = run_dir / name
        manifest = read_manifest(stage_dir)
        if i <= last_shared:  # every rank decides from rank 0's view of the run folder
            manifest = ddp.broadcast_object(manifest)
        if only is not None and i > selected.index(only):
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
        hit = manifest is not None and manifest.get("key") == key and not rerun
        adopted = None
        if not hit and not rerun and reuse_from and not ddp.is_distributed():
            adopted = _adopt(name, key, stage_dir, reuse_from)
        if hit:
            log.info("stage %-8s cached (%s)", name, stage_dir)
            status[name] = {"cached": True, "manifest": manifest}
        elif adopted is not None:
            manifest, source = adopted
            log.info("stage %-8s reused from %s", name, source)
            status[name] = {"cached": True, "manifest": manifest, "reused_from": str(source)}
        else:
            log.info("stage %-8s running -> %s", name, stage_dir)
            manifest = _run_stage(name, recipe, run_dir, inputs, key, resume, shared=i <= last_shared)
            log.info("stage %-8s done in %.1fs", name, manifest["wall_time_s"])
            status[name] = {"cached": False, "manifest": manifest}
        _register(inputs, stage_dir, manifest)
    if "bench" in status and ddp.is_main():
        from edgepipe.bench.report import write_run_report

        write_run_report(run_dir, recipe, status)
    return status
