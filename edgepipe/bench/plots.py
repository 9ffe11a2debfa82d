"""PNG plots of a bench document (`edgepipe bench --plots`, a run's report): accuracy vs latency with the
Pareto front, and latency distributions.

Figures are built on matplotlib's object API with the Agg canvas, so nothing touches pyplot's global state
or the user's backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

DPI = 80
_MARKERS = "osD^v<>pP*Xh"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both (faster and at least as accurate),
    ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _label(row: dict, batches: int) -> str:
    return f"{row['model']} · {row['runtime_label']}" + (f" · bs {row['batch_size']}" if batches > 1 else "")


def accuracy_vs_latency(rows: list[dict], path: Path) -> Path | None:
    """Top-1 against p50 latency at the first batch size; the Pareto front joined and ringed."""
    if not rows:
        return None
    batch = rows[0]["batch_size"]
    pts = [r for r in rows if r["batch_size"] == batch and r.get("top1") is not None]
    if not pts:
        log.info("no accuracy measured (no --data): accuracy-vs-latency plot skipped")
        return None
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    runtimes = sorted({r["runtime_label"] for r in pts})
    models = list(dict.fromkeys(r["model"] for r in pts))
    colors = {rt: f"C{i}" for i, rt in enumerate(runtimes)}
    for i, r in enumerate(pts):
        marker = _MARKERS[models.index(r["model"]) % len(_MARKERS)]
        ax.scatter(
            r["latency"]["p50_ms"], r["top1"], color=colors[r["runtime_label"]], marker=marker, s=45, zorder=3
        )
        ax.annotate(
            f"{r['model']}\n{r['runtime_label']}",
            (r["latency"]["p50_ms"], r["top1"]),
            fontsize=6,
            xytext=(4, 3 if i % 2 == 0 else -12),
            textcoords="offset points",
        )
    xy = [(r["latency"]["p50_ms"], r["top1"]) for r in pts]
    front = pareto_front(xy)
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1, ls="--", zorder=2, label="Pareto front")
    ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", zorder=4)
    for rt in runtimes:
        ax.scatter([], [], color=colors[rt], label=rt)
    _maybe_log(ax, [p[0] for p in xy])
    acc = [p[1] for p in xy]
    pad = max(1.0, 0.1 * (max(acc) - min(acc)))
    ax.set_ylim(min(acc) - pad, max(acc) + pad)
    ax.set_xlabel(f"p50 latency per batch of {batch} (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("accuracy vs latency (ringed: Pareto front)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def latency_distribution(rows: list[dict], path: Path) -> Path | None:
    """Box per model x runtime x batch: whiskers at p1/p99, so the tail a p99 gate sees is visible."""
    rows = [r for r in rows if r["latency"].get("samples_ms")]
    if not rows:
        return None
    batches = len({r["batch_size"] for r in rows})
    fig = _figure(7.0, 1.2 + 0.38 * len(rows))
    ax = fig.add_subplot()
    data = [r["latency"]["samples_ms"] for r in rows]
    box = ax.boxplot(
        data,
        **_horizontal(),
        whis=(1, 99),
        showfliers=True,
        patch_artist=True,
        flierprops={"markersize": 2, "alpha": 0.4},
    )
    runtimes = sorted({r["runtime_label"] for r in rows})
    for patch, r in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(f"C{runtimes.index(r['runtime_label'])}")
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(rows) + 1), [_label(r, batches) for r in rows], fontsize=7)
    ax.invert_yaxis()
    _maybe_log(ax, [v for d in data for v in (min(d), max(d))])
    ax.set_xlabel("latency per batch (ms); box: p25-p75, line: p50, whiskers: p1-p99")
    ax.set_title("latency distribution", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _maybe_log(ax, values: list[float]) -> None:
    """Log x when values span more than a decade, labelled 1, 2, 5 x 10^k in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def _horizontal() -> dict:
    """matplotlib 3.10 replaced boxplot's ``vert`` with ``orientation``; support both."""
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _save(fig, path: Path) -> Path:
    from edgepipe.artifacts import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    log.info("wrote %s", path)
    return path
