"""Measure one model on one runtime: peak memory while loading and timing it, latency per batch size.

The measurement core (edgepipe.bench.measure) times every entry through here, then in alternating rounds.
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


def single_pass(
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
    runtimes: dict[str, Any],
    sample: np.ndarray | dict[str, np.ndarray],
    rounds: int,
    iters: int,
    warmup: int = 0,
    *,
    min_seconds: float = 0.0,
    settle_s: float = 0.0,
) -> dict[str, list[list[float]]]:
    """Per runtime, every timed call (ms) in each round. Each round visits every runtime once (order shuffled
    per round, seeded): ``warmup`` untimed calls (its caches and thread pool warm again after the others
    ran), then at least ``iters`` timed calls and ``min_seconds`` of them; then ``settle_s`` of sleep, so
    its spinning worker threads are parked before the next one is timed. Drift of a shared machine between
    rounds then hits all of them alike, and a ratio taken within each round cancels it (paired_ratio).
    ``sample``: one input for all, or one per runtime key."""
    import random
    import time

    order = list(runtimes)
    out: dict[str, list[list[float]]] = {k: [] for k in order}
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for key in order:
            run = runtimes[key].predict
            x = sample[key] if isinstance(sample, dict) else sample
            for _ in range(warmup):
                run(x)
            times: list[float] = []
            spent = 0.0
            while len(times) < iters or spent < min_seconds:
                start = time.perf_counter()
                run(x)
                elapsed = time.perf_counter() - start
                times.append(elapsed * 1e3)
                spent += elapsed
            out[key].append(times)
            if settle_s:
                time.sleep(settle_s)
    return out


def round_medians(calls: list[list[float]]) -> list[float]:
    return [float(np.median(one)) for one in calls]


def round_ratios(base: list[float] | None, row: list[float] | None) -> list[float]:
    """How many times faster ``row`` ran than ``base`` in each round (their round medians, timed back to
    back); empty without rounds to pair."""
    if not base or not row or len(base) != len(row):
        return []
    return [b / r for b, r in zip(base, row, strict=True) if r > 0]


def paired_ratio(base: list[float] | None, row: list[float] | None) -> float | None:
    """The median over rounds of the per-round ratios; None without rounds to pair."""
    ratios = round_ratios(base, row)
    return float(np.median(ratios)) if ratios else None


def paired_spread(base: list[float] | None, row: list[float] | None) -> list[float] | None:
    """The interquartile range [q25, q75] of the per-round ratios: how far to trust the paired median."""
    ratios = round_ratios(base, row)
    return [float(q) for q in np.percentile(ratios, [25, 75])] if ratios else None
