"""Baseline-relative metrics and the Markdown view of an ``edgepipe.bench/1`` document."""

from __future__ import annotations

from typing import Any


def add_relative(rows: list[dict], baseline: str) -> None:
    """speedup (baseline p50 / row p50) and acc_drop (baseline - row top-1, points) per runtime + batch."""
    base = {(r["runtime"], r["batch_size"]): r for r in rows if r["model"] == baseline}
    for r in rows:
        b = base.get((r["runtime"], r["batch_size"]))
        r["is_baseline"] = r["model"] == baseline
        r["speedup"] = (
            b["latency"]["p50_ms"] / r["latency"]["p50_ms"] if b and r["latency"]["p50_ms"] else None
        )
        both = b is not None and b.get("top1") is not None and r.get("top1") is not None
        r["acc_drop"] = b["top1"] - r["top1"] if both else None  # type: ignore[index]


def _f(v: Any, nd: int = 2, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}{suffix}"
    return f"{v}{suffix}"


def markdown(doc: dict[str, Any]) -> str:
    """Models x runtimes x batch sizes side by side; accuracy columns only when data was given."""
    rows, settings, env = doc["rows"], doc["settings"], doc["environment"]
    acc = doc.get("data") is not None
    ref = doc.get("reference") is not None
    cols: list[tuple[str, Any]] = [
        ("model", lambda r: r["model"]),
        ("runtime", lambda r: r["runtime"]),
        ("batch", lambda r: r["batch_size"]),
    ]
    if acc:
        cols += [
            ("top-1 %", lambda r: _f(r.get("top1"))),
            ("top-5 %", lambda r: _f(r.get("top5"))),
            ("macro F1", lambda r: _f(r.get("macro_f1"), 3)),
        ]
    if ref:
        cols.append(("agree % vs ref", lambda r: _f(r.get("agreement"))))
    cols += [
        ("GMACs", lambda r: "–" if r.get("gmacs") is None else f"{r['gmacs']:.4g}"),
        (
            "INT8 MACs",
            lambda r: _f(None if r.get("int8_mac_share") is None else 100 * r["int8_mac_share"], 0, "%"),
        ),
        ("p50 ms", lambda r: _f(r["latency"]["p50_ms"], 3)),
        ("p99 ms", lambda r: _f(r["latency"]["p99_ms"], 3)),
        ("img/s", lambda r: _f(r["latency"]["throughput_ips"], 1)),
        ("cold ms", lambda r: _f(r["latency"]["cold_ms"], 1)),
        ("peak MB", lambda r: _f(r["memory"]["peak_delta_mb"], 1)),
        ("speed-up", lambda r: _f(r.get("speedup"), 2, "x")),
    ]
    if acc:
        cols.append(("top-1 drop", lambda r: _f(r.get("acc_drop"))))
    cols.append(("size MB", lambda r: _f(r["size_mb"])))
    if acc:
        cols += [
            ("top-1/GFLOP", lambda r: _f(r.get("top1_per_gflop"), 1)),
            ("top-1/ms", lambda r: _f(r.get("top1_per_ms"), 2)),
        ]
    lines = [
        "| " + " | ".join(c for c, _ in cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(get(r)) for _, get in cols) + " |" for r in rows),
    ]
    pk = env.get("packages", {})
    text = ["\n".join(lines), ""]
    threads = f"{settings['threads']} thread" + ("s" if settings["threads"] != 1 else "")
    text.append(
        f"Baseline for speed-up (p50 ratio) and top-1 drop (points): **{doc['baseline']}** on the same "
        f"runtime and batch. Latency: {threads}, {settings['warmup']} warm-up runs, then "
        f"at least {settings['min_iters']} runs and {settings['min_seconds']:g} s per row; cold = first "
        f"inference. OpenVINO: precision hint {settings['precision']}, performance hint {settings['hint']}. "
        "Peak MB: RSS rise while loading the runtime and timing it."
    )
    text.append(
        f"CPU: {env.get('cpu_model', '?')} ({env.get('logical_cores', '?')} logical cores; "
        f"{', '.join(env.get('isa_flags', [])) or 'no VNNI/AMX/AVX-512 flags'}); "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v != "absent")
        + "."
    )
    if acc:
        d = doc["data"]
        text.append(
            f"Accuracy: {d['images']} images of {d['data']} ({d['kind']}); top-1/ms uses p50 per image."
        )
    if ref:
        r = doc["reference"]
        text.append(
            f"agree %: share of images with the same top-1 class as {r['model']} on {r['runtime']} (which "
            f"predicts {r['distinct_predictions']} distinct class(es) on them)."
        )
    if doc.get("notes"):
        text += ["", *(f"- {n}" for n in doc["notes"])]
    if doc.get("gates"):
        failed = [g for g in doc["gates"] if not g["passed"]]
        gates = sorted({g["gate"] for g in doc["gates"]})
        text += [
            "",
            f"Gates {', '.join(gates)}: " + (f"{len(failed)} failed" if failed else "all passed") + ".",
        ]
    return "\n".join(text) + "\n"
