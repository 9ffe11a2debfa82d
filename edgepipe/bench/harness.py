"""Benchmark one model on one runtime: accuracy on labelled data, compute from the graph, latency."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.bench.macs import count_macs
from edgepipe.bench.timing import time_callable

log = logging.getLogger(__name__)


def model_size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def accuracy(rt, x: np.ndarray, y: np.ndarray, batch: int = 64) -> dict[str, Any]:
    logits = np.concatenate([rt.predict(x[i : i + batch]) for i in range(0, len(x), batch)])
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, : min(5, logits.shape[1])]
    return {
        "top1": 100.0 * float((pred == y).mean()),
        "top5": 100.0 * float((top5 == y[:, None]).any(1).mean()),
        "images": int(len(y)),
        "preds": pred,
    }


def bench_row(
    label: str,
    onnx_path: Path,
    runtime: str,
    rt,
    *,
    x: np.ndarray | None,
    y: np.ndarray | None,
    input_size: list[int],
    batch_size: int,
    warmup: int,
    min_iters: int,
    min_seconds: float,
    model_path: Path | None = None,
) -> dict[str, Any]:
    """One row of a report: the same keys whatever the runtime, so rows compare side by side."""
    compute = count_macs(onnx_path, batch=1)
    sample = np.random.default_rng(0).standard_normal((batch_size, *input_size), dtype=np.float32)
    timing = time_callable(lambda: rt.predict(sample), warmup, min_iters, min_seconds, batch_size=batch_size)
    row: dict[str, Any] = {
        "model": label,
        "runtime": runtime,
        "runtime_options": rt.describe(),
        "threads": rt.options.get("threads"),
        "file": str(model_path or onnx_path),
        "size_mb": round(model_size_mb(model_path or onnx_path), 3),
        "params": compute["params"],
        "gmacs": compute["gmacs"],
        "gflops": compute["gflops"],
        "int8_mac_share": compute["int8_mac_share"],
        "latency": timing,
    }
    if x is not None and y is not None:
        acc = accuracy(rt, x, y)
        row["preds"] = acc.pop("preds")
        row.update({"top1": acc["top1"], "top5": acc["top5"], "test_images": acc["images"]})
        row["efficiency_top1_per_gflop"] = acc["top1"] / compute["gflops"] if compute["gflops"] else None
        row["top1_per_ms"] = acc["top1"] / timing["p50_ms"]
    return row
