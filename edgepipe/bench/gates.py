"""CI gates: ``--fail-if "speedup<1.5"`` fails the run when any benched row meets the condition (the syntax
and the metrics are edgepipe/gates.py).

Relative metrics (acc_drop, speedup) compare a row with the baseline (the first model given) on the same
runtime and batch size, and are not checked on the baseline itself. A gate that cannot be evaluated on a row
(no baseline on that runtime, no data) fails too: a CI gate must never pass by having nothing to look at.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from edgepipe.errors import BenchInputError, GateFailed
from edgepipe.gates import METRICS, Gate

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def value(row: dict, metric: str) -> Any:
    """The row's value of a gate metric; None when the row does not have it (the gate then fails)."""
    node: Any = row
    for part in METRICS[metric].key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


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
            # relative gates judge other models against the baseline model, not its own float modes
            own = (row.get("baseline") or {}).get("model") == row["model"]
            if metric.relative and (row.get("is_baseline") or own):
                continue
            got = value(row, g.metric)
            failed = got is None or _OPS[g.op](got, g.threshold)
            result = {
                "gate": str(g),
                "model": row["model"],
                "runtime": row["runtime_label"],
                "batch_size": row["batch_size"],
                "value": got,
                "passed": not failed,
            }
            if got is None:
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
