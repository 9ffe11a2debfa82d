"""Gate syntax (``--fail-if "speedup<1.5"``, the recipe's ``bench.fail_if``): the metrics a gate may name and
the parser. A leaf, so the recipe validates its gates without importing bench/; evaluating gates on measured
rows is bench/gates.py's work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgepipe.errors import BenchInputError

_GATE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Metric:
    help: str
    key: str  # where a benchmark row holds the value: a key, or a dotted path into nested dicts
    relative: bool = False  # compared with the baseline row, so never checked on the baseline itself
    needs: str | None = None  # "data" | "reference": what the run must have to measure it
    unit: str | None = None  # "%": a percentage (0-100), like top-1; "fraction": 0..1, like agreement


METRICS: dict[str, Metric] = {
    "acc_drop": Metric("top-1 points below the baseline, same runtime", "acc_drop", True, "data"),
    "speedup": Metric("baseline p50 / this p50, same runtime and batch", "speedup", True),
    "p50_ms": Metric("median latency per batch (ms)", "latency.p50_ms"),
    "p90_ms": Metric("90th percentile latency (ms)", "latency.p90_ms"),
    "p99_ms": Metric("99th percentile latency (ms)", "latency.p99_ms"),
    "mean_ms": Metric("mean latency (ms)", "latency.mean_ms"),
    "cold_ms": Metric("first inference (ms)", "latency.cold_ms"),
    "throughput": Metric("images per second", "latency.throughput_ips"),
    "size_mb": Metric("model file size (MB)", "size_mb"),
    "gmacs": Metric("GMACs per image", "gmacs"),
    "peak_mb": Metric("peak RSS rise while loading and timing (MB)", "memory.peak_delta_mb"),
    "top1": Metric("top-1 %", "top1", needs="data", unit="%"),
    "top5": Metric("top-5 %", "top5", needs="data", unit="%"),
    "macro_f1": Metric("macro F1 %", "macro_f1", needs="data", unit="%"),
    "agreement": Metric(
        "fraction (0..1) of images with --reference's top-1", "agreement", needs="reference", unit="fraction"
    ),
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
    """``METRIC OP NUMBER`` with OP one of < <= > >=; anything else is a one-line error, and so is a threshold
    between 0 and 1 on a percentage (top1, top5, macro_f1), or above 1 on a fraction (agreement): a number
    in the other unit."""
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
    threshold = float(number)
    if METRICS[metric].unit == "%" and 0 < threshold < 1:
        raise BenchInputError(
            f"gate '{text}': {metric} is a percentage (0-100, like top1), and {threshold:g}% reads like a "
            f"fraction; fix: write {metric}{op}{100 * threshold:g}"
        )
    if METRICS[metric].unit == "fraction" and not 0 <= threshold <= 1:
        raise BenchInputError(
            f"gate '{text}': {metric} is a fraction (0..1, like export.min_agreement); fix: write "
            f"{metric}{op}{threshold / 100:g}"
        )
    return Gate(text, metric, op, threshold)
