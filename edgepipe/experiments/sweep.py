"""``edgepipe sweep``: a grid of recipe variants, each its own run, sharing every stage whose key is the same.

Each variant is a run folder ``OUT/<recipe name>__<key>-<value>...`` built by ``pipeline.build``. All
variants are validated by the recipe model before any work, so a misspelt KEY fails naming it. The split is
made once; every variant is then built with the other variants' folders as a cache (``reuse_from``): a
stage whose cache key equals a finished stage there is copied in instead of recomputed (sweeping qat.lr
trains finetune once). A killed sweep resumes where it stopped: a finished variant is all cache hits.

The table reads each run's report.json (the bench stage's rows) and the bench stage's predictions; no
metric is computed here that bench or train/metrics.py already computes.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgepipe.artifacts import atomic_write_json, atomic_write_text, hash_json, read_manifest
from edgepipe.errors import EdgepipeError, RecipeError, StageError, missing_dependency
from edgepipe.recipe import Recipe, load_recipe, parse_recipe
from edgepipe.runtimes.registry import runtime_for

log = logging.getLogger(__name__)

SCHEMA = "edgepipe.sweep/1"
ENGINES = ("local", "ray")
Build = Callable[..., dict[str, Any]]  # pipeline.build(recipe, out, resume=..., reuse_from=...)
INT8 = "int8-qat"  # the model the table calls INT8: the QAT graph the pipeline ships
PLOT = "sweep_accuracy_vs_latency.png"
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Axis:
    """One ``--set KEY=V1,V2``: a dotted recipe key and the values it takes (YAML scalars or flow lists)."""

    key: str
    values: tuple[Any, ...]


@dataclass
class Variant:
    name: str
    settings: dict[str, Any]
    recipe: Recipe


@dataclass
class Outcome:
    """What building one variant did: stages run, reused from a sibling, or already in its folder."""

    status: str  # done | failed
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: str | None = None
    wall_s: float = 0.0


def _split_values(text: str) -> list[str]:
    """Split on commas outside [...] / {...} / quotes, so ``rrc_scale=[0.5,1.0],[0.8,1.0]`` is two values."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_set(text: str) -> Axis:
    """``KEY=V1,V2,...``; each value is read as YAML (0.001 a float, se a string, [0.5,1.0] a list)."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    hint = "fix: write --set KEY=V1,V2 with a dotted recipe key, e.g. --set finetune.lr=0.001,0.003"
    if not sep or not key or not rest.strip():
        raise RecipeError(f"--set '{text}' is not KEY=V1,V2; {hint}")
    if any(not p for p in key.split(".")):
        raise RecipeError(f"--set '{text}': '{key}' is not a dotted key path; {hint}")
    if key == "name":
        raise RecipeError("--set name: the sweep names each variant itself; fix: sweep another key")
    values = []
    for raw in _split_values(rest):
        if not raw:
            raise RecipeError(f"--set '{text}' has an empty value; {hint}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise RecipeError(f"--set '{text}': value '{raw}' is not valid YAML; {hint}") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 3e-3 (no dot) as a string
        values.append(value)
    seen = []
    for v in values:
        if v in seen:
            raise RecipeError(f"--set '{text}' repeats the value {v!r}; fix: give each value once")
        seen.append(v)
    return Axis(key, tuple(values))


def _set_path(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise RecipeError(
                f"--set {key}: {where} is a value ({child!r}), not a section with keys; fix: set {where} "
                "itself or a key of a section"
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _SAFE.sub("_", text).strip("_") or "_"


def expand(raw: dict, axes: Sequence[Axis], base_name: str) -> list[Variant]:
    """Every point of the grid as a validated recipe, named from its settings (all checked before any run)."""
    keys = [a.key for a in axes]
    if not axes:
        raise RecipeError("sweep: no --set given; fix: add --set KEY=V1,V2 (e.g. finetune.lr=0.001,0.003)")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise RecipeError(f"--set {dup[0]} is given twice; fix: list all its values in one --set")
    variants = []
    for combo in itertools.product(*(a.values for a in axes)):
        settings = dict(zip(keys, combo, strict=True))
        doc = copy.deepcopy(raw)
        name = base_name + "".join(f"__{k}-{_slug(v)}" for k, v in settings.items())
        for k, v in settings.items():
            _set_path(doc, k, v)
        doc["name"] = name
        shown = " ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())
        variants.append(Variant(name, settings, parse_recipe(doc, f"--set {shown}")))
    names = [v.name for v in variants]
    for v in variants:
        if names.count(v.name) > 1:  # values that differ only in characters a folder name cannot hold
            v.name = f"{v.name}-{hash_json(v.settings)[:6]}"
            v.recipe = v.recipe.model_copy(update={"name": v.name})
    return variants


def _run_one(build: Build, recipe: Recipe, out: Path, resume: bool, reuse_from: list[Path]) -> Outcome:
    """Build one variant; a typed failure (e.g. export agreement too low) is recorded, not raised, so the
    other variants still run."""
    t0 = time.perf_counter()
    try:
        status = build(recipe, out, resume=resume, reuse_from=reuse_from)
    except EdgepipeError as exc:
        log.error("variant %s failed: %s", recipe.name, exc)
        return Outcome("failed", error=str(exc), wall_s=round(time.perf_counter() - t0, 3))
    return Outcome(
        "done",
        ran=[n for n, s in status.items() if not s["cached"]],
        reused=[n for n, s in status.items() if s.get("reused_from")],
        cached=[n for n, s in status.items() if s["cached"] and not s.get("reused_from")],
        wall_s=round(time.perf_counter() - t0, 3),
    )


def _run_one_on_ray(
    build: Build, recipe: Recipe, out: Path, resume: bool, reuse_from: list[Path], cpus: int
) -> Outcome:
    import torch

    torch.set_num_threads(cpus)  # the worker's share of the node, not every core
    return _run_one(build, recipe, out, resume, reuse_from)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise missing_dependency("ray", "dist") from None
    return ray


def _run_ray(
    build: Build, variants: list[Variant], out: Path, resume: bool, address: str | None, cpus: int
) -> dict[str, Outcome]:
    """One Ray task per variant on an existing cluster (``address``/RAY_ADDRESS) or a local one.

    Variants that run at the same time cannot reuse each other's unfinished stages: with Ray, sweep keys
    that leave finetune unchanged train it once per concurrent variant (the local engine trains it once)."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=cpus)(_run_one_on_ray)
        refs = {
            task.remote(build, v.recipe, out, resume, [out / o.name for o in variants if o is not v], cpus):
            v.name
            for v in variants
        }
        results: dict[str, Outcome] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = refs[done[0]]
            try:
                results[name] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                first = str(exc).strip().splitlines()[-1][:200]
                raise StageError(
                    f"sweep variant {name} crashed on Ray ({first}); see the Ray log above"
                ) from None
            log.info("variant %s %s", name, results[name].status)
        return results
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    recipe_path: Path,
    axes: Sequence[Axis],
    out: Path | None = None,
    engine: str = "local",
    resume: bool = False,
    ray_address: str | None = None,
    cpus_per_variant: int = 1,
    *,
    build: Build,
    plan: Callable[[Recipe], list[str]],
) -> dict[str, Any]:
    """Build every variant (skipping what is cached), then write sweep.json, sweep.md and the plot.

    ``build`` and ``plan`` are pipeline.build and pipeline.plan, passed in by the caller (cli): the
    pipeline is the top layer, which nothing below the CLI imports."""
    base = load_recipe(recipe_path)
    if engine not in ENGINES:
        raise RecipeError(f"--engine {engine}: unknown; fix: use one of {', '.join(ENGINES)}")
    if "bench" not in plan(base):
        raise RecipeError(
            f"{recipe_path}: stages lacks bench, whose report the sweep table reads; fix: add bench to stages"
        )
    raw = yaml.safe_load(Path(recipe_path).read_text())
    variants = expand(raw, axes, base.name)
    out = Path(out) if out is not None else Path("artifacts") / f"{base.name}-sweep"
    log.info("sweep: %d variant(s) -> %s", len(variants), out)
    if engine == "ray":
        _import_ray()  # the install hint before any work
    _split_once(build, variants[0], out)
    if engine == "local":
        results = {}
        for i, v in enumerate(variants, 1):
            log.info("variant %d/%d: %s", i, len(variants), v.name)
            others = [out / o.name for o in variants if o is not v]
            results[v.name] = _run_one(build, v.recipe, out, resume, others)
    else:
        results = _run_ray(build, variants, out, resume, ray_address, cpus_per_variant)
    doc = collect(variants, results, out, axes, base.name, engine)
    write_sweep(doc, out)
    return doc


def _split_once(build: Build, first: Variant, out: Path) -> None:
    """The first variant's split alone (a recipe with no other stage); every variant whose split config
    is the same then reuses it, even variants running at the same time on Ray."""
    build(first.recipe.model_copy(update={"stages": ()}), out)


def _primary(rows: list[dict]) -> str:
    """The runtime a variant's headline numbers come from: the one that runs every .onnx, when benched."""
    labels, onnx_rt = [r["runtime_label"] for r in rows], runtime_for("onnx").name
    return onnx_rt if onnx_rt in labels else labels[0]


def _model_entry(row: dict, labels: list[int], preds: list[int] | None, classes: list[str]) -> dict:
    from edgepipe.train.metrics import classification_metrics

    entry = {
        "top1": row.get("top1"),
        "params": row["params"],
        "gmacs": row["gmacs"],
        "size_mb": row["size_mb"],
        "p50_ms": row["latency"]["p50_ms"],
        "p90_ms": row["latency"]["p90_ms"],
        "batch_size": row["batch_size"],
        "speedup": row.get("speedup"),
        "top1_per_gflop": row.get("top1_per_gflop"),
        "top1_per_ms": row.get("top1_per_ms"),
        "latency": row["latency"],
    }
    if preds is not None:
        m = classification_metrics(labels, preds, classes)
        entry.update({k: m[k] for k in ("macro_precision", "macro_recall", "macro_f1")})
    return entry


def read_run(run_dir: Path) -> dict[str, Any]:
    """Per model (fp32, int8-qat, int8-ptq) on the run's primary runtime: the bench row's numbers plus macro
    precision/recall/F1 from the bench stage's test predictions."""
    report = json.loads((run_dir / "report.json").read_text())
    rows = report["rows"]
    runtime = _primary(rows)
    bench = read_manifest(run_dir / "bench")
    split = read_manifest(run_dir / "split")
    if bench is None or split is None:
        raise StageError(f"{run_dir}: bench or split stage missing; fix: rerun the sweep")
    preds_doc = json.loads((run_dir / "bench" / bench["outputs"]["predictions"]["file"]).read_text())
    classes = json.loads((run_dir / "split" / split["outputs"]["split"]["file"]).read_text())["classes"]
    models = {
        r["model"]: _model_entry(
            r, preds_doc["labels"], preds_doc["preds"].get(f"{r['model']}|{runtime}"), classes
        )
        for r in rows
        if r["runtime_label"] == runtime
    }
    return {"runtime": runtime, "environment": report["environment"], "models": models}


def collect(
    variants: list[Variant],
    results: dict[str, Outcome],
    out: Path,
    axes: Sequence[Axis],
    recipe_name: str,
    engine: str,
) -> dict[str, Any]:
    from edgepipe.bench.plots import pareto_front

    entries, env = [], None
    for v in variants:
        res = results[v.name]
        entry: dict[str, Any] = {
            "name": v.name,
            "settings": v.settings,
            "run": str(out / v.name),
            "status": res.status,
            "error": res.error,
            "stages": {"ran": res.ran, "reused": res.reused, "cached": res.cached},
            "wall_s": res.wall_s,
        }
        if res.status == "done":
            run = read_run(out / v.name)
            env = env or run["environment"]
            entry.update(runtime=run["runtime"], models=run["models"])
        entries.append(entry)
    done = [e for e in entries if INT8 in e.get("models", {})]
    points = [(e["models"][INT8]["p50_ms"], e["models"][INT8]["top1"] or 0.0) for e in done]
    front = {done[i]["name"] for i in pareto_front(points)}
    for e in entries:
        e["int8_pareto"] = e["name"] in front
    return {
        "schema": SCHEMA,
        "recipe": recipe_name,
        "engine": engine,
        "axes": {a.key: list(a.values) for a in axes},
        "variants": entries,
        "environment": env,
    }


def _f(v: Any, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _label(settings: dict[str, Any]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in settings.items())


def markdown(doc: dict[str, Any]) -> str:
    keys = list(doc["axes"])
    cols = [
        *keys,
        "FP32 top-1 %",
        "INT8 top-1 %",
        "INT8 macro P %",
        "INT8 macro R %",
        "INT8 macro F1 %",
        "params M",
        "GMACs",
        "FP32 MB",
        "INT8 MB",
        "FP32 p50 ms",
        "INT8 p50 ms",
        "INT8 speed-up",
        "INT8 top-1/ms",
        "INT8 top-1/GFLOP",
        "Pareto",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in doc["variants"]:
        cells = [str(e["settings"][k]) for k in keys]
        fp, q = e.get("models", {}).get("fp32", {}), e.get("models", {}).get(INT8, {})
        if e["status"] != "done":
            cells += ["failed"] + ["–"] * (len(cols) - len(keys) - 1)
        else:
            cells += [
                _f(fp.get("top1")),
                _f(q.get("top1")),
                _f(q.get("macro_precision")),
                _f(q.get("macro_recall")),
                _f(q.get("macro_f1")),
                _f(fp["params"] / 1e6 if fp.get("params") is not None else None, 3),
                _f(fp.get("gmacs"), 4),
                _f(fp.get("size_mb")),
                _f(q.get("size_mb")),
                _f(fp.get("p50_ms"), 3),
                _f(q.get("p50_ms"), 3),
                _f(q.get("speedup")) + "x" if q.get("speedup") else "–",
                _f(q.get("top1_per_ms")),
                _f(q.get("top1_per_gflop"), 1),
                "yes" if e["int8_pareto"] else "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    env = doc.get("environment") or {}
    runtime = next((e["runtime"] for e in doc["variants"] if e.get("runtime")), "?")
    text = [
        f"# edgepipe sweep: {doc['recipe']} ({len(doc['variants'])} variants: {' x '.join(keys)})",
        "",
        *lines,
        "",
        f"Test split, {runtime}; INT8 is the QAT graph. Macro precision/recall/F1 over the classes present. "
        "Pareto: no other variant's INT8 model is both faster and at least as accurate. Each run was timed "
        f"when it finished, not side by side; CPU: {env.get('cpu_model', '?')}.",
        "",
        f"![accuracy vs latency]({PLOT})",
        "",
    ]
    for e in doc["variants"]:
        s = e["stages"]
        what = (
            f"failed: {e['error']}"
            if e["status"] != "done"
            else f"ran {', '.join(s['ran']) or 'nothing'}; reused {', '.join(s['reused']) or 'nothing'}; "
            f"cached {', '.join(s['cached']) or 'nothing'}"
        )
        text.append(f"- `{e['name']}`: {what}")
    return "\n".join(text) + "\n"


def plot_rows(doc: dict[str, Any]) -> list[dict]:
    """FP32 and INT8 points of every finished variant, shaped as bench plot rows."""
    rows = []
    for e in doc["variants"]:
        for model, label in (("fp32", "FP32"), (INT8, "INT8")):
            m = e.get("models", {}).get(model)
            if m is not None and m.get("top1") is not None:
                rows.append(
                    {
                        "model": _label(e["settings"]),
                        "runtime_label": f"{label} {e['runtime']}",
                        "batch_size": m["batch_size"],
                        "top1": m["top1"],
                        "latency": m["latency"],
                    }
                )
    return rows


def write_sweep(doc: dict[str, Any], out: Path) -> None:
    from edgepipe.bench.plots import accuracy_vs_latency

    out.mkdir(parents=True, exist_ok=True)
    slim = copy.deepcopy(doc)
    for e in slim["variants"]:
        for m in e.get("models", {}).values():
            m["latency"] = {k: v for k, v in m["latency"].items() if k != "samples_ms"}
    atomic_write_json(out / "sweep.json", slim)
    atomic_write_text(out / "sweep.md", markdown(doc))
    accuracy_vs_latency(plot_rows(doc), out / PLOT)
    failed = [e["name"] for e in doc["variants"] if e["status"] != "done"]
    if failed:
        log.warning("%d variant(s) failed: %s", len(failed), ", ".join(failed))
