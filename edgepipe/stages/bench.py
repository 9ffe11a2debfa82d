"""bench: every exported model on every runtime: test top-1, GMACs from the graph, latency, efficiency."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgepipe.artifacts import StageResult, atomic_write_json
from edgepipe.bench.harness import bench_row
from edgepipe.bench.report import speedups
from edgepipe.bench.timing import environment
from edgepipe.data.loaders import SplitData
from edgepipe.quant.export import read_metadata
from edgepipe.recipe import Recipe
from edgepipe.stages.base import StageContext

log = logging.getLogger(__name__)

name = "bench"
needs = ("split", "onnx_fp32", "onnx_int8")
optional = ("ir_fp32", "ir_int8", "onnx_ptq")
MODELS = (
    ("fp32", "onnx_fp32", "ir_fp32"),
    ("int8-qat", "onnx_int8", "ir_int8"),
    ("int8-ptq", "onnx_ptq", None),
)


def config(recipe: Recipe) -> dict[str, Any]:
    return {"bench": recipe.bench.model_dump()}


def _runtimes(cfg, env: dict) -> list[tuple[str, str, dict]]:
    """(runtime, label, options); OpenVINO FP32 is pinned to f32, bf16 gets its own row where native."""
    out = []
    for rt in cfg.runtimes:
        if rt == "onnxruntime":
            out.append((rt, "onnxruntime", {"threads": cfg.threads}))
        else:
            out.append((rt, "openvino-f32", {"threads": cfg.threads, "precision": "f32"}))
            if {"avx512_bf16", "amx_bf16"} & set(env.get("isa_flags", [])):
                out.append((rt, "openvino-bf16", {"threads": cfg.threads, "precision": "bf16"}))
    return out


def check_gates(gates: tuple[str, ...], rows: list[dict]) -> list[dict[str, Any]]:
    """bench.fail_if, evaluated as ``edgepipe bench --fail-if`` does with fp32 as the baseline (each OpenVINO
    precision compared with its own fp32 row); the stage fails naming every gate that failed."""
    from edgepipe.bench import gates as gate_mod
    from edgepipe.bench.summary import add_relative
    from edgepipe.errors import GateFailed

    if not gates:
        return []
    view = [{**r, "runtime": r["runtime_label"], "batch_size": r["latency"]["batch_size"]} for r in rows]
    add_relative(view, "fp32")
    results = gate_mod.evaluate([gate_mod.parse_gate(g) for g in gates], view)
    try:
        gate_mod.enforce(results)
    except GateFailed as exc:
        raise GateFailed(f"bench.fail_if: {exc}") from None
    return results


def run(ctx: StageContext) -> StageResult:
    from edgepipe.runtimes import get_runtime

    r, cfg = ctx.recipe, ctx.recipe.bench
    env = environment()
    meta = read_metadata(ctx.input("onnx_fp32"))
    pre = meta["preprocessing"]
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    x, y = data.arrays("test")
    rows = []
    for label, onnx_key, ir_key in MODELS:
        if onnx_key not in ctx.inputs:
            continue
        onnx_path = ctx.inputs[onnx_key]
        for runtime, rt_label, options in _runtimes(cfg, env):
            if runtime == "openvino" and rt_label.endswith("bf16") and label != "fp32":
                continue
            model_path: Path = (
                ctx.inputs.get(ir_key, onnx_path) if runtime == "openvino" and ir_key else onnx_path
            )
            rt = get_runtime(runtime, model_path, **options)
            row = bench_row(
                label,
                onnx_path,
                runtime,
                rt,
                x=x,
                y=y,
                input_size=pre["input_size"],
                batch_size=cfg.batch_size,
                warmup=cfg.warmup,
                min_iters=cfg.min_iters,
                min_seconds=cfg.min_seconds,
                model_path=model_path,
            )
            row["runtime_label"] = rt_label
            rows.append(row)
            log.info(
                "bench %-8s %-14s top-1 %.2f  p50 %.3f ms",
                label,
                rt_label,
                row["top1"],
                row["latency"]["p50_ms"],
            )
    speedups(rows)
    gates = check_gates(cfg.fail_if, rows)
    preds = {f"{r_['model']}|{r_['runtime_label']}": r_.pop("preds").tolist() for r_ in rows}
    atomic_write_json(ctx.out_dir / "rows.json", {"environment": env, "rows": rows})
    atomic_write_json(ctx.out_dir / "predictions.json", {"labels": y.tolist(), "preds": preds})
    return StageResult(
        outputs={"rows": "rows.json", "predictions": "predictions.json"},
        metrics={"rows": len(rows), "gates": gates},
    )
