"""One bench row, whoever measured it (`edgepipe bench` or a run's bench stage), and its baseline.

Every number derived from a measurement is computed here once: top-1 per GFLOP, top-1 per ms (per image),
speed-up and top-1 drop. A relative number always names the row it was divided by (``baseline``), and which
row that is comes from a baseline policy, so new baselines (bf16 or native-float rows) plug in without
touching the writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edgepipe.bench.harness import paired_ratio, paired_spread

SCORE_KEYS = ("top1", "top5", "macro_f1", "images", "distinct_predictions", "agreement")
BASELINE_KEYS = ("model", "runtime", "precision", "runtime_label", "batch_size")


def runtime_label(runtime: str, precision: str | None) -> str:
    """The runtime as a row is grouped and shown: OpenVINO carries its inference precision (openvino-f32)."""
    return f"{runtime}-{precision}" if precision else runtime


def build_row(
    *,
    model: str,
    file: str,
    kind: str,
    runtime: str,
    precision: str | None,
    perf_hint: str | None,
    threads: int | None,
    runtime_options: dict[str, Any],
    size_mb: float,
    compute: dict[str, Any],
    latency: dict[str, Any],
    memory: dict[str, Any] | None,
    scores: dict[str, Any] | None,
    environment_id: str,
) -> dict[str, Any]:
    """A row with every key of the schema (None where not measured); relative keys are filled by
    :func:`add_relative` once all rows exist."""
    scores = scores or {}
    top1, gflops = scores.get("top1"), compute.get("gflops")
    per_image_ms = latency["p50_ms"] / latency["batch_size"]
    return {
        "model": model,
        "file": file,
        "kind": kind,
        "runtime": runtime,
        "precision": precision,
        "runtime_label": runtime_label(runtime, precision),
        "perf_hint": perf_hint,
        "batch_size": latency["batch_size"],
        "threads": threads,
        "runtime_options": runtime_options,
        "size_mb": size_mb,
        "params": compute.get("params"),
        "gmacs": compute.get("gmacs"),
        "gflops": gflops,
        "int8_mac_share": compute.get("int8_mac_share"),
        "compute_source": compute.get("source"),
        "latency": latency,
        "memory": memory,
        **{k: scores.get(k) for k in SCORE_KEYS},
        "top1_per_gflop": top1 / gflops if top1 is not None and gflops else None,
        "top1_per_ms": top1 / per_image_ms if top1 is not None and per_image_ms > 0 else None,
        "speedup": None,
        "acc_drop": None,
        "is_baseline": False,
        "baseline": None,
        "environment_id": environment_id,
    }


class BaselinePolicy(Protocol):
    """Which row another row's speed-up and top-1 drop divide by."""

    def pick(self, row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SameSetting:
    """``model`` measured on the same runtime label (runtime and precision) and batch size as the row."""

    model: str
    match: tuple[str, ...] = ("runtime_label", "batch_size")

    def pick(self, row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next(
            (b for b in rows if b["model"] == self.model and all(b[k] == row[k] for k in self.match)), None
        )

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "match": list(self.match)}


@dataclass(frozen=True)
class FastestFloat:
    """The fastest row of the float ``models`` (each in its precisions: f32, bf16...) on the same runtime and
    batch size: an INT8 speed-up over anything slower than the runtime's best float flatters."""

    models: tuple[str, ...]
    match: tuple[str, ...] = ("runtime", "batch_size")

    def pick(self, row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        same = [b for b in rows if b["model"] in self.models and all(b[k] == row[k] for k in self.match)]
        return min(same, key=lambda b: b["latency"]["p50_ms"], default=None)

    def describe(self) -> dict[str, Any]:  # schema: Baseline
        if len(self.models) == 1:
            return {"model": self.models[0], "match": list(self.match), "pick": "fastest"}
        return {"model": "float", "models": list(self.models), "match": list(self.match), "pick": "fastest"}


def baseline_policy(float_models: list[str], reference: str | None = None) -> FastestFloat:
    """The one baseline rule of every bench: the fastest float entry on the same runtime and batch size, or,
    when a reference model is named, the fastest of that model's rows there."""
    return FastestFloat((reference,) if reference is not None else tuple(dict.fromkeys(float_models)))


def add_relative(rows: list[dict[str, Any]], policy: BaselinePolicy) -> None:
    """speedup (baseline p50 / row p50) and acc_drop (baseline - row top-1, points), naming the baseline."""
    for r in rows:
        b = policy.pick(r, rows)
        r["is_baseline"] = b is r
        r["baseline"] = None if b is None else {k: b[k] for k in BASELINE_KEYS}
        r["speedup"] = (
            b["latency"]["p50_ms"] / r["latency"]["p50_ms"]
            if b is not None and r["latency"]["p50_ms"]
            else None
        )
        base_rounds = (b or {}).get("latency", {}).get("round_medians_ms")
        r["speedup_paired"] = paired_ratio(base_rounds, r["latency"].get("round_medians_ms"))
        r["speedup_paired_iqr"] = paired_spread(base_rounds, r["latency"].get("round_medians_ms"))
        both = b is not None and b.get("top1") is not None and r.get("top1") is not None
        r["acc_drop"] = b["top1"] - r["top1"] if both else None  # type: ignore[index]


def add_paired(rows: list[dict[str, Any]], policy: BaselinePolicy) -> None:
    """Only ``speedup_paired``, against ``policy``'s row: for rows that carry just that relative number (a
    device's rows in a document's ``targets``); rows without a latency are left alone."""
    timed = [r for r in rows if r.get("latency")]
    for r in timed:
        b = policy.pick(r, timed)
        r["speedup_paired"] = paired_ratio(
            None if b is None else b["latency"].get("round_medians_ms"), r["latency"].get("round_medians_ms")
        )


def baseline_name(row: dict[str, Any]) -> str | None:
    """The baseline as a table shows it: the model alone when it ran on the row's own runtime and batch."""
    b = row.get("baseline")
    if b is None:
        return None
    if b["runtime_label"] == row["runtime_label"] and b["batch_size"] == row["batch_size"]:
        return str(b["model"])
    return f"{b['model']} · {b['runtime_label']} · bs {b['batch_size']}"
