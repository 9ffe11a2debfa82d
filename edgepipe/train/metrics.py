"""Classification metrics from predictions (numpy only) and a confusion-matrix PNG.

Every rate is a percentage, like top-1 everywhere else in edgepipe, except agreement: a fraction (0..1) in
every document, like ``export.min_agreement``, shown as a percentage only in Markdown and console text.
Macro averages follow scikit-learn's defaults (classes present in labels or predictions; an undefined ratio
such as the precision of a class never predicted counts as 0), so numbers compare with what users get from
``classification_report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import atomic_path, atomic_write_json


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, -1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1, seen) per class of a confusion matrix; seen: in labels or predictions."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1, (support > 0) | (predicted > 0)


def _macro(x: np.ndarray, seen: np.ndarray) -> float:
    return 100.0 * float(x[seen].mean()) if seen.any() else float("nan")


def macro_f1(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Macro F1 in % (like top-1) over the classes in labels or predictions: the one macro F1 of every
    training, evaluation, bench and predict document."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if y.size == 0:
        return float("nan")
    n = int(max(y.max(), p.max())) + 1
    _, _, f1, seen = _per_class(confusion_matrix(y, p, n))
    return _macro(f1, seen)


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction (0..1) of images on which two models predict the same class (``a``, ``b``: class indices):
    the one agreement of every export, target, device, bench and ensemble document."""
    x, y = np.asarray(a), np.asarray(b)
    return float((x == y).mean()) if x.size else float("nan")


def classification_metrics(
    labels: Sequence[int], preds: Sequence[int], classes: Sequence[str], top5: float | None = None
) -> dict[str, Any]:
    """Top-1 (and top-5 if given), macro precision/recall/F1, per-class scores and the confusion matrix."""
    cm = confusion_matrix(labels, preds, len(classes))
    precision, recall, f1, seen = _per_class(cm)
    support, tp = cm.sum(1), np.diag(cm)
    total = int(support.sum())
    return {
        "n": total,
        "top1": 100.0 * float(tp.sum()) / total if total else float("nan"),
        "top5": top5,
        "macro_precision": _macro(precision, seen),
        "macro_recall": _macro(recall, seen),
        "macro_f1": _macro(f1, seen),
        "per_class": [
            {
                "class": name,
                "support": int(support[i]),
                # accuracy on the images of this class (= its recall); undefined without any
                "accuracy": 100.0 * float(recall[i]) if support[i] else None,
                "precision": 100.0 * float(precision[i]),
                "f1": 100.0 * float(f1[i]),
            }
            for i, name in enumerate(classes)
        ],
        "confusion": cm.tolist(),
    }


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The manifest-sized part: headline numbers and per-class accuracy, without the confusion matrix."""
    keys = ("n", "top1", "top5", "macro_precision", "macro_recall", "macro_f1")
    return {
        **{k: metrics[k] for k in keys},
        "per_class_accuracy": {c["class"]: c["accuracy"] for c in metrics["per_class"]},
    }


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised colours (so rare classes show), counts written in the cells up to 40 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    cm = np.asarray(cm)
    share = _ratio(cm.astype(np.float64), cm.sum(1, keepdims=True).repeat(n, 1))
    side = float(np.clip(0.3 * n + 3, 5, 18))
    font = 9 if n <= 20 else 8 if n <= 60 else 5  # cells are ~0.3 inch at any n: 8 pt fits 60 classes
    names = [c if len(c) <= 24 else c[:23] + "…" for c in classes]
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=min(font, 7), color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100 if n <= 40 else 150, format="png")
    plt.close(fig)
    return path


def write_eval_report(
    out_dir: Path, part: str, result: dict[str, Any], classes: Sequence[str], title: str
) -> dict[str, Any]:
    """metrics_<part>.json and confusion_<part>.png from an ``evaluate()`` result; returns the summary."""
    metrics = classification_metrics(result["labels"], result["preds"], classes, result.get("top5"))
    atomic_write_json(
        Path(out_dir) / f"metrics_{part}.json", {"part": part, "classes": list(classes), **metrics}
    )
    plot_confusion(np.asarray(metrics["confusion"]), classes, Path(out_dir) / f"confusion_{part}.png", title)
    return summary(metrics)
