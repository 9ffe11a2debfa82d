"""bench: every exported model on every runtime: test top-1, GMACs from the graph, latency, efficiency.

Rows, relative numbers and gates are those of `edgepipe bench` (edgepipe.bench.rows); the run's report.json
is the same ``edgepipe.bench`` document, written after the run by edgepipe.bench.report.write_run_report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import StageResult, atomic_write_json, sha256_file
from edgepipe.bench import gates as gate_mod
from edgepipe.bench.accuracy import score_logits
from edgepipe.bench.harness import model_size_mb
from edgepipe.bench.loading import graph_compute
from edgepipe.bench.measure import Entry, Settings, measure
from edgepipe.bench.report import SCHEMA
from edgepipe.bench.rows import baseline_policy
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.quant.export import read_metadata
from edgepipe.recipe import Recipe
from edgepipe.runtimes.registry import (
    artifact_runtimes,
    float_modes,
    kind_of_suffix,
    runtime_for,
    runtime_spec,
)
from edgepipe.stages.base import StageContext, StageSpec, check_names

log = logging.getLogger(__name__)

MODELS = (("fp32", True), ("int8-qat", False), ("int8-ptq", False))  # (label, float): export's models
_FILE_OF = {"fp32": "fp32", "int8-qat": "int8", "int8-ptq": "ptq"}  # label -> export output suffix
# every speed-up divides by the runtime's fastest float mode (OpenVINO bf16 on a bf16 CPU), named per row
BASELINE = baseline_policy([label for label, is_float in MODELS if is_float])
HINT = "LATENCY"


def config(recipe: Recipe) -> dict[str, Any]:
    # the schema is part of the key: a cached measurement in an older row format is measured again
    return {"bench": recipe.bench.model_dump(), "schema": SCHEMA}


def check(recipe: Recipe) -> None:
    check_names("bench.runtimes", recipe.bench.runtimes, artifact_runtimes())


def artifact(runtime: str, label: str) -> str:
    """The stage input a runtime runs for a model: its own artifact from export (an IR), else the ONNX."""
    return f"{runtime_spec(runtime).artifact}_{_FILE_OF[label]}"


def _modes(cfg, is_float: bool) -> list[tuple[str, str | None, dict]]:
    """(runtime, precision, options): a float model in each float mode the runtime runs natively here
    (OpenVINO: f32, plus bf16/f16 where the CPU has it), an INT8 model as our loaders load it (OpenVINO
    'auto': the plugin default, measured fastest for INT8)."""
    out: list[tuple[str, str | None, dict]] = []
    for rt in cfg.runtimes:
        spec = runtime_spec(rt)
        if not spec.takes_precision:
            out.append((rt, None, {"threads": cfg.threads}))
        elif is_float:
            for precision, opts in float_modes(rt):
                out.append((rt, precision, {"threads": cfg.threads, **opts, "hint": HINT}))
        else:
            out.append((rt, "auto", {"threads": cfg.threads, "precision": "auto", "hint": HINT}))
    return out


def check_gates(gates: tuple[str, ...], rows: list[dict]) -> list[dict[str, Any]]:
    """bench.fail_if on rows with their relative numbers: the stage fails naming every gate that failed."""
    from edgepipe.errors import GateFailed
    from edgepipe.gates import parse_gate

    if not gates:
        return []
    results = gate_mod.evaluate([parse_gate(g) for g in gates], rows)
    try:
        gate_mod.enforce(results)
    except GateFailed as exc:
        raise GateFailed(f"bench.fail_if: {exc}") from None
    return results


def run(ctx: StageContext) -> StageResult:
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits

    r, cfg = ctx.recipe, ctx.recipe.bench
    meta = read_metadata(ctx.input("onnx_fp32"))
    pre = Preprocessing.from_dict(meta["preprocessing"])
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    x, y = data.arrays("test")
    entries: list[Entry] = []
    models: list[dict[str, Any]] = []
    logits: dict[tuple[str, str, str | None], np.ndarray] = {}

    def scorer(key: tuple[str, str, str | None]):
        def score(rt) -> dict[str, Any]:
            logits[key] = runtime_logits(rt, x)
            return score_logits(logits[key], y)

        return score

    for label, is_float in MODELS:
        onnx_key = f"onnx_{_FILE_OF[label]}"
        if onnx_key not in ctx.inputs:
            continue
        onnx_path = ctx.inputs[onnx_key]
        compute = graph_compute(onnx_path)
        modes = _modes(cfg, is_float)
        for runtime, precision, options in modes:
            path: Path = ctx.inputs.get(artifact(runtime, label), onnx_path)
            entries.append(
                Entry(
                    model=label,
                    file=path,
                    kind=kind_of_suffix(path.suffix).name,  # type: ignore[union-attr]
                    runtime=runtime,
                    build=lambda runtime=runtime, path=path, options=options: get_runtime(
                        runtime, path, **options
                    ),
                    input_size=list(pre.input_size),
                    compute=compute,
                    is_float=is_float,
                    precision=precision,
                    perf_hint=HINT if runtime_spec(runtime).takes_precision else None,
                    score=scorer((label, runtime, precision)),
                )
            )
        models.append(_model_doc(label, onnx_path, pre, meta, compute, [m[0] for m in modes]))
    settings = Settings(
        threads=cfg.threads,
        batch_sizes=[cfg.batch_size],
        warmup=cfg.warmup,
        min_iters=cfg.min_iters,
        min_seconds=cfg.min_seconds,
        rounds=cfg.paired_rounds,
        keep_samples=True,  # for the run report's latency plot; dropped from report.json
    )
    measured = measure(entries, settings)
    rows = measured.rows
    preds = {f"{e.model}|{row['runtime_label']}": logits[e.model, e.runtime, e.precision].argmax(1).tolist()
             for e, row in zip(entries, rows, strict=True)}  # fmt: skip
    ort_logits = {e.model: logits[e.model, e.runtime, e.precision] for e in entries
                  if e.runtime == runtime_for("onnx").name}  # the device rows' reference  # fmt: skip
    devices = _bench_devices(ctx, x, y, ort_logits) if cfg.devices else []
    gates = check_gates(cfg.fail_if, rows)
    out = {
        "environment": measured.environment,
        "settings": {**_settings(cfg), **measured.settings},
        "baseline": measured.baseline,
        "data": {
            "data": r.data.dataset or str(r.data.root),
            "kind": "test split of this run",
            "classes": data.classes,
            "images": int(len(y)),
            "available_images": int(len(y)),
        },
        "models": models,
        "rows": rows,  # latency samples kept: the run report draws them, then drops them
        "gates": gates,
        "devices": devices,  # targets entries (how: device); the run report appends them to its targets
    }
    atomic_write_json(ctx.out_dir / "rows.json", out)
    atomic_write_json(ctx.out_dir / "predictions.json", {"labels": y.tolist(), "preds": preds})
    accounts = _op_accounts(ctx, pre)
    return StageResult(
        outputs={"rows": "rows.json", "predictions": "predictions.json",
                 **{f"ops_{key}": f"{key}.ops.json" for key in accounts}},  # fmt: skip
        metrics={"rows": len(rows), "gates": gates, "op_account": accounts},
    )


def _op_accounts(ctx: StageContext, pre: Preprocessing) -> dict[str, dict[str, Any]]:
    """Which ops of the shipped FP32 and QAT INT8 files each runtime runs in INT8 and where its time goes (its
    own profiler, on bench.threads): ``<key>.ops.json`` beside the rows, a summary per runtime returned."""
    cfg = ctx.recipe.bench
    sample = np.zeros((1, *pre.input_size), np.float32)
    keep = ("int8_time_share", "time_share_by_kind")
    out = {}
    for label, key in (("fp32", "fp32"), ("int8-qat", "int8")):
        onnx_path = ctx.inputs.get(f"onnx_{key}")
        full = {}
        for runtime in cfg.runtimes:
            spec = runtime_spec(runtime)
            profile = spec.profile_fn()
            if profile is None or onnx_path is None:
                continue
            precision = {"precision": "auto"} if spec.takes_precision else {}  # as the loaders load it
            path = ctx.inputs.get(artifact(runtime, label), onnx_path)
            full[runtime] = profile(path, threads=cfg.threads, sample=sample, runs=20, **precision)
        if full:
            atomic_write_json(ctx.out_dir / f"{key}.ops.json", full)
            out[key] = {rt: {k: a.get(k) for k in keep} for rt, a in full.items()}
    return out


def _bench_devices(ctx: StageContext, x: np.ndarray, y: np.ndarray, ort_logits: dict) -> list[dict]:
    """Every .onnx on every bench.devices device (edgepipe.targets.device) on a seeded sample of the test
    split, scored against the same model's ONNX Runtime logits here."""
    from edgepipe.targets.device import DeviceModel, DeviceTiming, bench_on_device

    cfg = ctx.recipe.bench
    n = min(len(y), cfg.device_images)
    idx = np.sort(np.random.default_rng(0).permutation(len(y))[:n])
    models = [
        DeviceModel(
            label, ctx.inputs[f"onnx_{_FILE_OF[label]}"], x[idx], ort_logits[label][idx], np.asarray(y)[idx]
        )
        for label, _ in MODELS
        if label in ort_logits
    ]
    if not models:
        from edgepipe.errors import RecipeError

        onnx_rt = runtime_for("onnx")
        raise RecipeError(f"bench.devices: device rows are scored against {onnx_rt.title} here, and "
                          f"bench.runtimes has none; fix: add {onnx_rt.name} to bench.runtimes")  # fmt: skip
    timing = DeviceTiming(warmup=cfg.warmup, min_iters=cfg.min_iters, min_seconds=cfg.min_seconds,
                          rounds=cfg.paired_rounds, round_iters=Settings.round_iters, threads=cfg.threads,
                          timeout_s=cfg.device_timeout_s)  # fmt: skip
    out = []
    for spec in cfg.devices:
        for m, r in zip(models, bench_on_device(spec, models, timing), strict=True):
            out.append({"model": m.name, **r.to_dict()})
    return out


def _model_doc(
    label: str, onnx_path: Path, pre: Preprocessing, meta: dict, compute: dict, runtimes: list[str]
) -> dict:
    return {
        "name": label,
        "file": str(onnx_path),
        "kind": "onnx",
        "sha256": sha256_file(onnx_path),
        "size_mb": round(model_size_mb(onnx_path), 3),
        "input_size": list(pre.input_size),
        "preprocessing": pre.to_dict(),
        "preprocessing_source": "ONNX metadata_props",
        "classes": meta.get("classes"),
        "classes_source": "ONNX metadata_props" if meta.get("classes") else None,
        "runtimes": list(dict.fromkeys(runtimes)),
        "compute": compute,
    }


def _settings(cfg) -> dict[str, Any]:
    return {
        "runtimes": list(cfg.runtimes),
        "threads": cfg.threads,
        "batch_sizes": [cfg.batch_size],
        "warmup": cfg.warmup,
        "min_iters": cfg.min_iters,
        "min_seconds": cfg.min_seconds,
        "precision": "f32",
        "hint": HINT,
        "gates": list(cfg.fail_if),
        "max_top1_drop": cfg.max_top1_drop,
    }


STAGE = StageSpec(
    name="bench",
    needs=("split", "onnx_fp32", "onnx_int8"),
    optional=("ir_fp32", "ir_int8", "onnx_ptq", "ir_ptq"),  # ir_ptq: ptq.method nncf
    outputs=("rows", "predictions", "ops_fp32", "ops_int8"),
    config=config,
    run=run,
    check=check,
)
