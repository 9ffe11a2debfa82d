"""CI gates: ``--fail-if "speedup<1.5"`` fails the run when any benched row meets the condition.

Relative metrics (acc_drop, speedup) compare a row with the baseline (the first model given) on the same
runtime and batch size, and are not checked on the baseline itself. A gate that cannot be evaluated on a row
(no baseline on that runtime, no data) fails too: a CI gate must never pass by having nothing to look at.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgepipe.errors import BenchInputError, GateFailed

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_GATE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Metric:
    help: str
    get: Callable[[dict], Any]
    relative: bool = False
    needs: str | None = None  # "data" | "reference"


def _lat(key: str) -> Callable[[dict], Any]:
    return lambda r: r["latency"][key]


METRICS: dict[str, Metric] = {
    "acc_drop": Metric(
        "top-1 points below the baseline, same runtime", lambda r: r.get("acc_drop"), True, "data"
    ),
    "speedup": Metric("baseline p50 / this p50, same runtime and batch", lambda r: r.get("speedup"), True),
    "p50_ms": Metric("median latency per batch (ms)", _lat("p50_ms")),
    "p90_ms": Metric("90th percentile latency (ms)", _lat("p90_ms")),
    "p99_ms": Metric("99th percentile latency (ms)", _lat("p99_ms")),
    "mean_ms": Metric("mean latency (ms)", _lat("mean_ms")),
    "cold_ms": Metric("first inference (ms)", _lat("cold_ms")),
    "throughput": Metric("images per second", _lat("throughput_ips")),
    "size_mb": Metric("model file size (MB)", lambda r: r.get("size_mb")),
    "gmacs": Metric("GMACs per image", lambda r: r.get("gmacs")),
    "peak_mb": Metric("peak RSS rise while loading and timing (MB)", lambda r: r["memory"]["peak_delta_mb"]),
    "top1": Metric("top-1 %", lambda r: r.get("top1"), needs="data"),
    "top5": Metric("top-5 %", lambda r: r.get("top5"), needs="data"),
    "macro_f1": Metric("macro F1 (0-1)", lambda r: r.get("macro_f1"), needs="data"),
    "agreement": Metric("% equal top-1 with --reference", lambda r: r.get("agreement"), needs="reference"),
}


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    """``METRIC OP NUMBER`` with OP one of < <= > >=; anything else is a one-line error."""
    m = _GATE.match(text)
    if m is None:
        raise BenchInputError(
            f"malformed gate '{text}'; fix: write METRIC<NUMBER or METRIC>NUMBER (also <=, >=), e.g. "
            "--fail-if 'acc_drop>0.5'"
        )
    metric, op, number = m.groups()
    if metric not in METRICS:
        raise BenchInputError(
            f"unknown gate metric '{metric}' in '{text}'; fix: use one of {', '.join(METRICS)}"
        )
    return Gate(text, metric, op, float(number))


def check_inputs(gates: list[Gate], models: int, has_data: bool, has_reference: bool) -> None:
    """Refuse, before any timing, gates that this run could never evaluate."""
    for g in gates:
        metric = METRICS[g.metric]
        if metric.relative and models < 2:
            raise BenchInputError(
                f"gate '{g.text}' compares with the first model (the baseline); fix: give two or more models"
            )
        if metric.needs == "data" and not has_data:
            raise BenchInputError(f"gate '{g.text}' needs accuracy; fix: pass --data")
        if metric.needs == "reference" and not has_reference:
            raise BenchInputError(f"gate '{g.text}' needs agreement; fix: pass --reference MODEL")


def evaluate(gates: list[Gate], rows: list[dict]) -> list[dict[str, Any]]:
    """One result per gate and row it applies to: value, and whether the row passed."""
    results = []
    for g in gates:
        metric = METRICS[g.metric]
        for row in rows:
            if metric.relative and row.get("is_baseline"):
                continue
            value = metric.get(row)
            failed = value is None or _OPS[g.op](value, g.threshold)
            result = {
                "gate": str(g),
                "model": row["model"],
                "runtime": row["runtime_label"],
                "batch_size": row["batch_size"],
                "value": value,
                "passed": not failed,
            }
            if value is None:
                result["reason"] = (
                    "no baseline row on this runtime and batch" if metric.relative else "not measured"
                )
            results.append(result)
    return results


def enforce(results: list[dict[str, Any]]) -> None:
    """Raise GateFailed naming every failed gate, where it failed and the value that failed it."""
    failed = [r for r in results if not r["passed"]]
    if not failed:
        return
    parts = [
        f"{r['gate']} on {r['model']} / {r['runtime']} / batch {r['batch_size']}: "
        + (f"no value ({r['reason']})" if r["value"] is None else f"value {r['value']:.4g}")
        for r in failed[:3]
    ]
    more = f"; and {len(failed) - 3} more (see the JSON 'gates')" if len(failed) > 3 else ""
    raise GateFailed(f"gate failed: {'; '.join(parts)}{more}; fix: improve the model or relax the gate")
