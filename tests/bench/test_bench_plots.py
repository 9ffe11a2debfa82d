"""Bench plots: the Pareto front is right, PNGs are written small, and latency samples feed them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgepipe.bench.plots import DPI, accuracy_vs_latency, latency_distribution, pareto_front
from edgepipe.bench.timing import time_callable


def test_pareto_front_keeps_points_nothing_beats():
    pts = [(1.0, 70.0), (2.0, 80.0), (1.5, 60.0), (3.0, 80.0), (4.0, 90.0), (0.5, 50.0), (2.0, 75.0)]
    assert pareto_front(pts) == [5, 0, 1, 4]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for model, acc, ms in (("fp32", 90.0, 4.0), ("int8", 89.0, 2.0), ("tiny", 70.0, 3.0)):
        for runtime, f in (("onnxruntime", 1.0), ("openvino", 0.8)):
            samples = (ms * f + rng.exponential(0.2, 50)).tolist()
            lat = {"p50_ms": float(np.median(samples)), "samples_ms": samples}
            rows.append({"model": model, "runtime": runtime, "runtime_label": runtime, "batch_size": 1,
                         "top1": acc, "latency": lat})  # fmt: skip
    return rows


def test_plots_write_small_pngs(tmp_path):
    a = accuracy_vs_latency(_rows(), tmp_path / "acc.png")
    b = latency_distribution(_rows(), tmp_path / "sub" / "lat.png")
    for path in (a, b):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width <= 7 * DPI + 1
        assert path.stat().st_size < 150_000
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp files left


def test_plots_skip_what_was_not_measured(tmp_path):
    rows = _rows()
    for r in rows:
        r["top1"] = None
        del r["latency"]["samples_ms"]
    assert accuracy_vs_latency(rows, tmp_path / "acc.png") is None
    assert latency_distribution(rows, tmp_path / "lat.png") is None
    assert not list(tmp_path.iterdir())


def test_time_callable_keeps_samples_only_when_asked():
    plain = time_callable(lambda: None, warmup=1, min_iters=7, min_seconds=0.0)
    kept = time_callable(lambda: None, warmup=1, min_iters=7, min_seconds=0.0, keep_samples=True)
    assert "samples_ms" not in plain
    assert len(kept["samples_ms"]) == kept["iters"] == 7
    assert min(kept["samples_ms"]) == kept["min_ms"] and np.median(kept["samples_ms"]) == kept["p50_ms"]
