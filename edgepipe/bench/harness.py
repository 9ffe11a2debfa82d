"""Measure one model on one runtime: peak memory while loading and timing it, latency per batch size.

Both `edgepipe bench` and the run's bench stage time through here, so their latency and memory mean the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.bench.memory import PeakMemory
from edgepipe.bench.timing import time_callable

log = logging.getLogger(__name__)


def model_size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def measure(
    build: Callable[[], Any],
    input_size: list[int],
    batch_sizes: list[int],
    *,
    warmup: int,
    min_iters: int,
    min_seconds: float,
    keep_samples: bool,
) -> tuple[Any, dict[int, dict[str, Any]], dict[str, Any]]:
    """(runtime, latency per batch size, memory): ``build()`` makes the runtime inside the memory window, then
    each batch size is timed on the same seeded random input."""
    rng = np.random.default_rng(0)
    samples = {b: rng.standard_normal((b, *input_size), dtype=np.float32) for b in batch_sizes}
    with PeakMemory() as mem:
        rt = build()
        timings = {
            b: time_callable(
                lambda x=x, run=rt.predict: run(x),
                warmup,
                min_iters,
                min_seconds,
                batch_size=b,
                keep_samples=keep_samples,
            )
            for b, x in samples.items()
        }
    return rt, timings, mem.result()


def alternating_rounds(
    runtimes: dict[str, Any], sample: np.ndarray, rounds: int, iters: int, warmup: int = 0
) -> dict[str, list[list[float]]]:
    """Per runtime, every call's time (ms) in each round, after ``warmup`` untimed calls each; each round
    calls every runtime ``iters`` times in turn (order shuffled per round, seeded). Drift of a shared machine
    between rounds then hits all of them alike, and a ratio taken within each round cancels it
    (paired_ratio)."""
    import random
    import time

    for rt in runtimes.values():
        for _ in range(warmup):
            rt.predict(sample)
    order = list(runtimes)
    out: dict[str, list[list[float]]] = {k: [] for k in order}
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for key in order:
            run, times = runtimes[key].predict, []
            for _ in range(iters):
                start = time.perf_counter()
                run(sample)
                times.append((time.perf_counter() - start) * 1e3)
            out[key].append(times)
    return out


def round_medians(calls: list[list[float]]) -> list[float]:
    return [float(np.median(one)) for one in calls]


def paired_ratio(base: list[float] | None, row: list[float] | None) -> float | None:
    """How many times faster ``row`` ran than ``base``, taken within each round (their round medians, timed
    back to back) and the median over rounds; None without rounds to pair."""
    if not base or not row or len(base) != len(row):
        return None
    return float(np.median([b / r for b, r in zip(base, row, strict=True) if r > 0]))
