"""benchmarks/int8_speedup.py: every speed-up names its baseline (the runtime's fastest float mode),
timing alternates models and reports the spread of per-round medians, and OpenVINO INT8 runs as our loaders
load it."""

from __future__ import annotations

import numpy as np

from tests.conftest import load_script


def _load():
    return load_script("int8_speedup")


def _row(model, runtime, mode, p50):
    return {"model": model, "runtime": runtime, "mode": mode, "b1": {"p50_ms": p50}}


def test_speedups_divide_by_the_fastest_float_and_name_it():
    mod = _load()
    rows = {
        "a": _row("fp32", "openvino", "f32", 3.0),
        "b": _row("fp32", "openvino", "bf16", 2.0),
        "c": _row("int8-qat", "openvino", "auto", 1.0),
        "d": _row("fp32", "onnxruntime", "f32", 4.0),
        "e": _row("int8-qat", "onnxruntime", "f32", 2.0),
    }
    mod.add_speedups(rows, [1])
    c = rows["c"]["b1"]
    assert c["speedup_vs_f32"] == 3.0 and c["speedup_vs_fastest_float"] == 2.0
    assert c["fastest_float"] == "openvino bf16"
    e = rows["e"]["b1"]
    assert e["speedup_vs_fastest_float"] == e["speedup_vs_f32"] == 2.0
    assert e["fastest_float"] == "onnxruntime f32"
    assert rows["a"]["b1"]["speedup_vs_fastest_float"] == 2.0 / 3.0  # f32 itself is slower than bf16 here


def test_modes_give_fp32_every_native_float_and_int8_the_shipped_load():
    mod = _load()
    native = {"onnxruntime": ["f32"], "openvino": ["f32", "bf16"]}
    assert mod.modes("onnxruntime", "int8-qat", native) == [("f32", {})]
    assert [m for m, _ in mod.modes("openvino", "fp32", native)] == ["f32", "bf16"]
    assert [m for m, _ in mod.modes("openvino", "int8-qat", native)] == ["auto", "f32"]
    assert [m for m, _ in mod.modes("openvino", "int8-ptq-nncf", native)] == ["auto"]
    assert [m for m, _ in mod.modes("openvino", "fp32", {"openvino": ["f32"]})] == ["f32"]


def test_alternate_timing_reports_rounds_and_round_median_spread():
    mod = _load()
    calls: list[str] = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def predict(self, x):
            calls.append(self.name)
            return x

    lat = mod.alternate_timing({"a": Fake("a"), "b": Fake("b")}, np.zeros(1), rounds=3, iters=2, warmup=1)
    assert calls.count("a") == calls.count("b") == 3 * (1 + 2)  # each round warms each model up again
    for t in lat.values():
        assert t["rounds"] == 3 and t["samples"] == 6
        assert t["round_median_min_ms"] <= t["round_median_max_ms"]


def test_targets_use_the_fastest_float_and_nncf():
    mod = _load()
    rows = {
        "f": _row("fp32", "openvino", "f32", 3.0),
        "g": _row("fp32", "openvino", "bf16", 2.0),
        "q": _row("int8-qat", "openvino", "auto", 1.0),
        "n": _row("int8-ptq-nncf", "openvino", "auto", 0.9),
    }
    mod.add_speedups(rows, [1])
    for r in rows.values():
        r.update(test_top1=90.0, agreement_with_torch=0.996)
    lines = mod.targets({"rows": list(rows.values())}, 224, trained=True)
    want = "1.5x faster than the fastest float (openvino bf16): 2.00x (p50s), 2.00x (paired per round) -> met"
    assert any(want in ln for ln in lines)
    assert any("faster than NNCF's INT8: 1.000 vs 0.900 ms -> NOT met" in ln for ln in lines)
    assert any("99.5%: 99.60% -> met" in ln for ln in lines)


def _timed(model, runtime, mode, rounds):
    row = _row(model, runtime, mode, float(np.median(rounds)))
    row["b1"]["round_medians_ms"] = rounds
    return row


def test_paired_ratios_cancel_drift_between_rounds_and_both_estimates_must_meet_a_target():
    """The host slowed down halfway (every model 2x slower in rounds 3-5): within each round INT8 is 1.2x
    faster, and the paired estimate says so; a p50 ratio near the target does not make it met alone."""
    mod = _load()
    rows = {"f": _timed("fp32", "onnxruntime", "f32", [1.2, 1.2, 1.2, 2.4, 2.4, 2.4]),
            "q": _timed("int8-qat", "onnxruntime", "f32", [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])}
    mod.add_speedups(rows, [1])
    cell = rows["q"]["b1"]
    assert abs(cell["paired_speedup_vs_fastest_float"] - 1.2) < 1e-9
    assert np.allclose(cell["paired_speedup_range"], [1.2, 1.2])
    # p50s: 1.8 / 1.2 = 1.5x (the target); within rounds 1.2x and 1.71x, median 1.46x: not met
    rows["q"] = _timed("int8-qat", "onnxruntime", "f32", [1.0, 1.0, 1.0, 1.4, 1.4, 1.4])
    mod.add_speedups(rows, [1])
    assert abs(rows["q"]["b1"]["speedup_vs_fastest_float"] - 1.5) < 1e-9
    for r in rows.values():
        r.update(test_top1=90.0, agreement_with_torch=0.996)
    lines = mod.targets({"rows": list(rows.values())}, 224, trained=False)
    assert any("1.50x (p50s), 1.46x (paired per round) -> NOT met" in ln for ln in lines), lines
