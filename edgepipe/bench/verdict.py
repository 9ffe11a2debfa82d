"""Which model to ship, per runtime: the fastest row whose top-1 is within ``max_top1_drop`` points of the
best float row on that runtime.

A user reads a bench table to choose one file per deployment runtime; this says which, and why the faster
rows were passed over. Float rows are those with no integer MACs in their graph (``int8_mac_share`` 0: the
count comes from the exported graph, never from a file name). Rows are compared at one batch size (the
smallest measured, as the accuracy-vs-latency plot) and ranked by speed as ``_ranking`` says: by their
alternating rounds when every row has them (single passes, timed minutes apart on a shared machine, can
invert a 1.2x difference), else by p50. The speed-up divides by the fastest float row on the same runtime and
batch, named; the paired speed-up (median of per-round ratios) is given when both rows were timed in rounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_MAX_TOP1_DROP = 0.5


def is_float(row: dict[str, Any]) -> bool:
    return not row.get("int8_mac_share")


def _p50(row: dict[str, Any]) -> float:
    return float(row["latency"]["p50_ms"])


def _ref(row: dict[str, Any]) -> dict[str, Any]:
    return {"model": row["model"], "runtime_label": row["runtime_label"], "top1": row.get("top1"),
            "p50_ms": _p50(row)}  # fmt: skip


def _ranking(rows: list[dict[str, Any]]) -> tuple[str, Any]:
    """How rows are ranked by speed: the median of their round medians when every row was timed in the same
    alternating rounds (rows that ran back to back: the comparison a shared machine's drift cannot skew),
    else each row's own single-pass p50."""
    rounds = [r["latency"].get("round_medians_ms") or [] for r in rows]
    if rows and all(rounds) and len({len(x) for x in rounds}) == 1:
        return "paired rounds", lambda r: float(np.median(r["latency"]["round_medians_ms"]))
    return "single-pass p50", _p50


def verdict(rows: list[dict[str, Any]], runtime: str, max_top1_drop: float) -> dict[str, Any] | None:
    """The pick for one runtime (None when the runtime has no rows)."""
    batches = sorted({r["batch_size"] for r in rows if r["runtime"] == runtime})
    if not batches:
        return None
    mine = [r for r in rows if r["runtime"] == runtime and r["batch_size"] == batches[0]]
    ranked_by, _lat = _ranking(mine)
    out: dict[str, Any] = {
        "runtime": runtime, "batch_size": batches[0], "max_top1_drop": max_top1_drop, "ranked_by": ranked_by,
        "model": None,
        "runtime_label": None, "p50_ms": None, "top1": None, "size_mb": None, "speedup": None,
        "speedup_paired": None, "floor": None, "best_float": None, "fastest_float": None, "passed_over": [],
        "reason": "",
    }  # fmt: skip
    scored = [r for r in mine if r.get("top1") is not None]
    if not scored:
        out["reason"] = "no accuracy measured (bench with --data, or a run's test split): no floor to hold"
        return out
    best_float = max((r for r in scored if is_float(r)), key=lambda r: r["top1"], default=None)
    if best_float is None:
        out["reason"] = "no float row on this runtime to hold the top-1 floor against"
        return out
    floor = best_float["top1"] - max_top1_drop
    eligible = [r for r in scored if r["top1"] >= floor - 1e-9]
    pick = min(eligible, key=_lat)  # best_float itself is always eligible
    passed = [r for r in scored if _lat(r) < _lat(pick) and r["top1"] < floor - 1e-9]
    # the speed-up is the pick's own, against the bench's one baseline rule (rows.add_relative)
    named = pick.get("baseline") or {}
    base = next((r for r in mine if all(r[k] == named.get(k) for k in ("model", "runtime_label"))), None)
    out.update(
        model=pick["model"], runtime_label=pick["runtime_label"], p50_ms=_p50(pick), top1=pick["top1"],
        size_mb=pick.get("size_mb"), floor=floor, best_float=_ref(best_float),
        fastest_float=_ref(base) if base is not None else None,
        speedup=pick.get("speedup"), speedup_paired=pick.get("speedup_paired"),
        passed_over=[{**_ref(r), "below_floor_by": floor - r["top1"]} for r in sorted(passed, key=_lat)],
    )  # fmt: skip
    return out


def verdicts(
    rows: list[dict[str, Any]], max_top1_drop: float = DEFAULT_MAX_TOP1_DROP
) -> list[dict[str, Any]]:
    """One verdict per runtime, in the order the rows first name them."""
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    return [v for v in (verdict(rows, rt, max_top1_drop) for rt in runtimes) if v is not None]


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def markdown(items: list[dict[str, Any]]) -> list[str]:
    """The report's closing section: one line per runtime."""
    if not items:
        return []
    drop = items[0]["max_top1_drop"]
    text = ["## Which to ship", "",
            f"Per runtime, the fastest model whose top-1 is within {drop:g} pt of the best float model on "
            "that runtime (bench.max_top1_drop); speed-up over the fastest float row on the same runtime and "
            "batch.", ""]  # fmt: skip
    for v in items:
        if v["model"] is None:
            text.append(f"- **{v['runtime']}**: not judged: {v['reason']}.")
            continue
        base = v["fastest_float"]
        if base is None or (base["model"], base["runtime_label"]) == (v["model"], v["runtime_label"]):
            speed = "itself the fastest float row"
        else:
            speed = (f"{_x(v['speedup'])} (paired {_x(v['speedup_paired'])}) over {base['model']} · "
                     f"{base['runtime_label']}")  # fmt: skip
        size = f", {v['size_mb']:.2f} MB" if v.get("size_mb") is not None else ""
        line = (
            f"- **{v['runtime']}**: ship **{v['model']}** ({v['runtime_label']}; fastest by "
            f"{v['ranked_by']}): {v['p50_ms']:.3f} ms p50 at batch {v['batch_size']}, "
            f"top-1 {v['top1']:.2f} (floor {v['floor']:.2f} = best float {v['best_float']['model']} "
            f"{v['best_float']['top1']:.2f} - "
            f"{drop:g}), {speed}{size}."
        )
        if v["passed_over"]:
            line += (
                " Faster but below the floor: "
                + ", ".join(
                    f"{p['model']} · {p['runtime_label']} ({p['top1']:.2f}, {p['p50_ms']:.3f} ms)"
                    for p in v["passed_over"]
                )
                + "."
            )
        text.append(line)
    return text
