"""The measurement core: entries (one model on one runtime in one mode) in, the rows of a bench document out.

`edgepipe bench`, the run's bench stage and `edgepipe ensemble` all measure through :func:`measure`, so a
latency, a speed-up and a top-1 drop mean the same whoever printed them. Per entry: the runtime is built and
timed alone (peak memory, cold first call, warm-up, percentiles per batch size), then scored through the same
runtime. Then every (entry, batch size) is timed again in alternating paired rounds: a ratio taken within a
round, between two models timed back to back, cancels the drift of a shared machine, and the spread of those
per-round ratios is reported beside their median. Every relative number divides by one rule
(:func:`edgepipe.bench.rows.baseline_policy`): the fastest float entry on the same runtime and batch size,
unless a reference model is named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import hash_json
from edgepipe.bench.harness import alternating_rounds, model_size_mb, round_medians, single_pass
from edgepipe.bench.report import document
from edgepipe.bench.rows import add_relative, baseline_policy, build_row
from edgepipe.bench.timing import environment

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One row group: a model file on a runtime in one mode, and how to build and score it."""

    model: str  # the row's model name; entries of one model in several modes share it
    file: Path
    kind: str  # onnx | openvino-ir | checkpoint | torch-export
    runtime: str
    build: Callable[[], Any]  # -> a built edgepipe.runtimes.Runtime
    input_size: list[int]  # C, H, W
    compute: dict[str, Any]
    is_float: bool  # a float model: a candidate for the baseline
    precision: str | None = None  # the runtime's precision mode, for runtimes that take one
    perf_hint: str | None = None
    score: Callable[[Any], dict[str, Any]] | None = None  # scores measured through the built runtime


@dataclass
class Settings:
    """How every entry is timed. ``rounds`` 0 turns the paired rounds off."""

    threads: int = 2
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    warmup: int = 20
    min_iters: int = 100
    min_seconds: float = 2.0
    rounds: int = 15
    round_warmup: int = 5  # untimed calls of each entry at the start of its turn in every round
    round_iters: int = 20
    round_min_seconds: float = 0.05  # and at least this much timed work per entry per round
    settle_s: float = 0.01  # pause after each turn: the last entry's worker threads stop spinning
    keep_samples: bool = False  # every single-pass time in the rows (for the latency plot)

    def describe(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "batch_sizes": list(self.batch_sizes),
            "warmup": self.warmup,
            "min_iters": self.min_iters,
            "min_seconds": self.min_seconds,
            "paired_rounds": self.rounds,
            "round_warmup": self.round_warmup if self.rounds else None,
            "round_iters": self.round_iters if self.rounds else None,
            "round_min_seconds": self.round_min_seconds if self.rounds else None,
        }


@dataclass
class Measurement:
    environment: dict[str, Any]
    settings: dict[str, Any]
    baseline: dict[str, Any]
    rows: list[dict[str, Any]]  # with their samples_ms when kept (drop_samples after plotting)

    def document(self, *, settings: dict[str, Any], **rest: Any) -> dict[str, Any]:
        """The bench document: this measurement plus what the caller knows (data, models, gates, notes...);
        ``settings`` adds the caller's own (runtimes, precision, gates...) to the timing settings."""
        return document(
            environment=self.environment,
            settings={**settings, **self.settings},
            baseline=self.baseline,
            rows=self.rows,
            **rest,
        )


def measured_environment() -> dict[str, Any]:
    env = environment()
    env["id"] = hash_json(env)[:12]
    return env


def measure(entries: list[Entry], settings: Settings, reference: str | None = None) -> Measurement:
    """Every entry timed alone and scored, then all timed again in alternating paired rounds; the rows carry
    speed-up (single pass), speed-up paired (median of per-round ratios) with its interquartile range, and
    top-1 drop, each against :func:`baseline_policy` (``reference``: a model name among the entries)."""
    env = measured_environment()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    live: dict[str, Any] = {}
    inputs: dict[str, np.ndarray] = {}
    for i, e in enumerate(entries):
        samples = {b: rng.standard_normal((b, *e.input_size), dtype=np.float32) for b in settings.batch_sizes}
        rt, timings, memory = single_pass(
            e.build,
            e.input_size,
            list(samples),
            warmup=settings.warmup,
            min_iters=settings.min_iters,
            min_seconds=settings.min_seconds,
            keep_samples=settings.keep_samples,
        )
        scores = e.score(rt) if e.score is not None else {}
        described = rt.describe()
        for b, timing in timings.items():
            row = build_row(
                model=e.model,
                file=str(e.file),
                kind=e.kind,
                runtime=e.runtime,
                precision=e.precision,
                perf_hint=e.perf_hint,
                threads=rt.options.get("threads", settings.threads),
                runtime_options=described,
                size_mb=round(model_size_mb(e.file), 3),
                compute=e.compute,
                latency=timing,
                memory=memory,
                scores=scores,
                environment_id=env["id"],
            )
            rows.append(row)
            if settings.rounds:  # kept loaded for the rounds; else freed before the next entry loads
                live[f"{i}/{b}"], inputs[f"{i}/{b}"] = rt, samples[b]
            top1 = scores.get("top1")
            log.info(
                "bench %s on %s, batch %d: p50 %.3f ms%s",
                e.model,
                row["runtime_label"],
                b,
                timing["p50_ms"],
                f", top-1 {top1:.2f}" if top1 is not None else "",
            )
        del rt
    if settings.rounds and len(rows) > 1:
        log.info("timing %d rows again in %d alternating rounds", len(rows), settings.rounds)
        calls = alternating_rounds(
            live,
            inputs,
            settings.rounds,
            settings.round_iters,
            settings.round_warmup,
            min_seconds=settings.round_min_seconds,
            settle_s=settings.settle_s,
        )
        for row, key in zip(rows, live, strict=True):
            row["latency"]["round_medians_ms"] = round_medians(calls[key])
    live.clear()
    policy = baseline_policy([e.model for e in entries if e.is_float], reference)
    add_relative(rows, policy)
    return Measurement(env, settings.describe(), policy.describe(), rows)
