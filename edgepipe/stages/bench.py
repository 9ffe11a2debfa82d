"""bench: every exported model on every runtime: test top-1, GMACs from the graph, latency, efficiency.

Rows, relative numbers and gates are those of `edgepipe bench` (edgepipe.bench.rows); the run's report.json
is the same ``edgepipe.bench`` document, written after the run by edgepipe.bench.report.write_run_report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import StageResult, atomic_write_json, hash_json, sha256_file
from edgepipe.bench import gates as gate_mod
from edgepipe.bench.accuracy import score_logits
from edgepipe.bench.harness import alternating_rounds, measure, model_size_mb, round_medians
from edgepipe.bench.loading import graph_compute
from edgepipe.bench.report import SCHEMA
from edgepipe.bench.rows import FastestFloat, add_relative, build_row
from edgepipe.bench.timing import environment
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.quant.export import read_metadata
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext, StageSpec

log = logging.getLogger(__name__)

MODELS = (
    ("fp32", "onnx_fp32", "ir_fp32"),
    ("int8-qat", "onnx_int8", "ir_int8"),
    ("int8-ptq", "onnx_ptq", "ir_ptq"),  # ir_ptq: ptq.method nncf's OpenVINO-backend IR
)
# every speed-up divides by the runtime's fastest float mode (OpenVINO bf16 on a bf16 CPU), named per row
BASELINE = FastestFloat("fp32")
HINT = "LATENCY"
PAIRED_ITERS = 20  # calls per row per alternating round


def config(recipe: Recipe) -> dict[str, Any]:
    # the schema is part of the key: a cached measurement in an older row format is measured again
    return {"bench": recipe.bench.model_dump(), "schema": SCHEMA}


def _runtimes(cfg, label: str) -> list[tuple[str, str | None, dict]]:
    """(runtime, precision, options): the FP32 model in each float mode the runtime runs natively here
    (OpenVINO: f32, plus bf16/f16 where the CPU has it), an INT8 model as our loaders load it (OpenVINO
    'auto': the plugin default, measured fastest for INT8)."""
    from edgepipe.runtimes import float_modes

    out: list[tuple[str, str | None, dict]] = []
    for rt in cfg.runtimes:
        if rt == "onnxruntime":
            out.append((rt, None, {"threads": cfg.threads}))
        elif label == "fp32":
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
    env = environment()
    env["id"] = hash_json(env)[:12]
    meta = read_metadata(ctx.input("onnx_fp32"))
    pre = Preprocessing.from_dict(meta["preprocessing"])
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    x, y = data.arrays("test")
    rows: list[dict[str, Any]] = []
    live: list[Any] = []
    models: list[dict[str, Any]] = []
    preds: dict[str, list[int]] = {}
    ort_logits: dict[str, np.ndarray] = {}  # the device rows' reference
    for label, onnx_key, ir_key in MODELS:
        if onnx_key not in ctx.inputs:
            continue
        onnx_path = ctx.inputs[onnx_key]
        compute = graph_compute(onnx_path)
        runtimes = _runtimes(cfg, label)
        for runtime, precision, options in runtimes:
            model_path: Path = (
                ctx.inputs.get(ir_key, onnx_path) if runtime == "openvino" and ir_key else onnx_path
            )
            rt, timings, memory = measure(
                lambda runtime=runtime, path=model_path, options=options: get_runtime(
                    runtime, path, **options
                ),
                list(pre.input_size),
                [cfg.batch_size],
                warmup=cfg.warmup,
                min_iters=cfg.min_iters,
                min_seconds=cfg.min_seconds,
                keep_samples=True,  # for the run report's latency plot; dropped from report.json
            )
            logits = runtime_logits(rt, x)
            if runtime == "onnxruntime":
                ort_logits[label] = logits
            row = build_row(
                model=label,
                file=str(model_path),
                kind="openvino-ir" if model_path.suffix == ".xml" else "onnx",
                runtime=runtime,
                precision=precision,
                perf_hint=HINT if runtime == "openvino" else None,
                threads=rt.options.get("threads"),
                runtime_options=rt.describe(),
                size_mb=round(model_size_mb(model_path), 3),
                compute=compute,
                latency=timings[cfg.batch_size],
                memory=memory,
                scores=score_logits(logits, y),
                environment_id=env["id"],
            )
            live.append(rt)  # timed again below, alternating with the other rows
            rows.append(row)
            preds[f"{label}|{row['runtime_label']}"] = logits.argmax(1).tolist()
            log.info(
                "bench %-8s %-14s top-1 %.2f  p50 %.3f ms",
                label,
                row["runtime_label"],
                row["top1"],
                row["latency"]["p50_ms"],
            )
        models.append(_model_doc(label, onnx_path, pre, meta, compute, [t[0] for t in runtimes]))
    if cfg.paired_rounds and rows:
        sample = np.random.default_rng(0).standard_normal((cfg.batch_size, *pre.input_size), dtype=np.float32)
        rounds = alternating_rounds(dict(enumerate(live)), sample, cfg.paired_rounds, PAIRED_ITERS)
        for i, row in enumerate(rows):
            row["latency"]["round_medians_ms"] = round_medians(rounds[i])
    del live
    devices = _bench_devices(ctx, x, y, ort_logits) if cfg.devices else []
    add_relative(rows, BASELINE)
    gates = check_gates(cfg.fail_if, rows)
    measured = {
        "environment": env,
        "settings": _settings(cfg),
        "baseline": BASELINE.describe(),
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
    atomic_write_json(ctx.out_dir / "rows.json", measured)
    atomic_write_json(ctx.out_dir / "predictions.json", {"labels": y.tolist(), "preds": preds})
    return StageResult(
        outputs={"rows": "rows.json", "predictions": "predictions.json"},
        metrics={"rows": len(rows), "gates": gates},
    )


def _bench_devices(ctx: StageContext, x: np.ndarray, y: np.ndarray, ort_logits: dict) -> list[dict]:
    """Every .onnx on every bench.devices device (edgepipe.targets.device) on a seeded sample of the test
    split, scored against the same model's ONNX Runtime logits here."""
    from edgepipe.targets.device import DeviceModel, DeviceTiming, bench_on_device

    cfg = ctx.recipe.bench
    n = min(len(y), cfg.device_images)
    idx = np.sort(np.random.default_rng(0).permutation(len(y))[:n])
    models = [
        DeviceModel(label, ctx.inputs[onnx_key], x[idx], ort_logits[label][idx], np.asarray(y)[idx])
        for label, onnx_key, _ in MODELS
        if onnx_key in ctx.inputs and label in ort_logits
    ]
    if not models:
        from edgepipe.errors import RecipeError

        raise RecipeError("bench.devices: device rows are scored against ONNX Runtime here, and "
                          "bench.runtimes has none; fix: add onnxruntime to bench.runtimes")  # fmt: skip
    timing = DeviceTiming(warmup=cfg.warmup, min_iters=cfg.min_iters, min_seconds=cfg.min_seconds,
                          rounds=cfg.paired_rounds, round_iters=PAIRED_ITERS, threads=cfg.threads,
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
    outputs=("rows", "predictions"),
    config=config,
    run=run,
)
