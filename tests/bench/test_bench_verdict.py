"""Which to ship: the fastest row within the top-1 floor of the best float, per runtime, named, explained."""

from __future__ import annotations

import pytest

from edgepipe.bench.rows import add_relative, baseline_policy
from edgepipe.bench.schema import Verdict
from edgepipe.bench.verdict import markdown, verdicts


def _row(model, runtime, p50, top1, int8=0.0, precision=None, batch=1, rounds=None, size=1.0):
    label = f"{runtime}-{precision}" if precision else runtime
    return {"model": model, "runtime": runtime, "runtime_label": label, "precision": precision,
            "batch_size": batch, "top1": top1, "int8_mac_share": int8, "size_mb": size,
            "latency": {"p50_ms": p50, "round_medians_ms": rounds}}  # fmt: skip


ROWS = [
    _row("fp32", "onnxruntime", 2.0, 90.9, rounds=[2.0, 2.2, 1.8], size=16.9),
    _row("int8-qat", "onnxruntime", 0.6, 90.7, int8=0.99, rounds=[0.5, 0.55, 0.6], size=4.8),
    _row("int8-ptq", "onnxruntime", 0.5, 90.2, int8=0.99, size=4.7),  # faster, 0.7 pt under best float
    _row("fp32", "openvino", 4.0, 90.9, precision="f32"),
    _row("fp32", "openvino", 0.8, 90.95, precision="bf16"),  # the best float on OpenVINO: native bf16
    _row("int8-qat", "openvino", 1.5, 90.8, int8=0.99, precision="auto"),
    _row("int8-qat", "onnxruntime", 1.5, 90.7, int8=0.99, batch=8),  # another batch: not compared
]
add_relative(ROWS, baseline_policy(["fp32"]))  # as every bench does: speed-ups name the fastest float


def test_the_fastest_row_within_the_floor_wins_and_faster_rows_below_it_are_named():
    ort, ov = verdicts(ROWS, max_top1_drop=0.5)
    assert (ort["runtime"], ort["model"], ort["batch_size"]) == ("onnxruntime", "int8-qat", 1)
    assert ort["floor"] == pytest.approx(90.4) and ort["best_float"]["model"] == "fp32"
    assert ort["speedup"] == pytest.approx(2.0 / 0.6)
    assert ort["speedup_paired"] == pytest.approx(4.0)  # median of the per-round ratios 4, 4, 3
    assert [p["model"] for p in ort["passed_over"]] == ["int8-ptq"]
    assert ort["passed_over"][0]["below_floor_by"] == pytest.approx(0.2)
    # OpenVINO: bf16 float beats the INT8 model here, so the verdict is the float model itself
    assert (ov["model"], ov["runtime_label"], ov["speedup"]) == ("fp32", "openvino-bf16", 1.0)
    for v in (ort, ov):
        Verdict.model_validate(v)  # the documented schema
    text = "\n".join(markdown([ort, ov]))
    assert ort["ranked_by"] == "single-pass p50"  # int8-ptq has no rounds: one measure for every row
    assert "ship **int8-qat** (onnxruntime; fastest by single-pass p50)" in text
    assert "3.33x (paired 4.00x) over fp32 · onnxruntime" in text
    assert "Faster but below the floor: int8-ptq · onnxruntime (90.20" in text
    assert "ship **fp32** (openvino-bf16;" in text and "itself the fastest float row" in text


def test_a_looser_floor_ships_the_faster_ptq_model():
    (ort, _) = verdicts(ROWS, max_top1_drop=1.0)
    assert ort["model"] == "int8-ptq" and ort["passed_over"] == []


def test_without_accuracy_or_float_rows_the_runtime_is_not_judged_and_says_why():
    no_acc = [{**r, "top1": None} for r in ROWS[:3]]
    (v,) = verdicts(no_acc)
    assert v["model"] is None and "no accuracy measured" in v["reason"]
    (v,) = verdicts(ROWS[1:3])
    assert v["model"] is None and "no float row" in v["reason"]
    assert "not judged: no float row" in "\n".join(markdown([v]))


def test_rows_timed_in_the_same_rounds_are_ranked_by_them_not_by_their_single_passes():
    # single passes minutes apart on a shared machine put FP32 ahead; back to back, INT8 is 1.25x faster
    rows = [
        _row("fp32", "onnxruntime", 0.375, 90.39, rounds=[0.50, 0.52, 0.49]),
        _row("int8-qat", "onnxruntime", 0.445, 90.44, int8=1.0, rounds=[0.40, 0.41, 0.40]),
    ]
    add_relative(rows, baseline_policy(["fp32"]))
    (v,) = verdicts(rows)
    assert (v["model"], v["ranked_by"]) == ("int8-qat", "paired rounds")
    assert v["speedup_paired"] == pytest.approx(1.25) and v["speedup"] == pytest.approx(0.375 / 0.445)
