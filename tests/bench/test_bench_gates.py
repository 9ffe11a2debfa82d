"""--fail-if gates: strict syntax, relative metrics against the baseline, and no silent passes."""

from __future__ import annotations

import pytest

from edgepipe.bench.gates import check_inputs, enforce, evaluate
from edgepipe.errors import BenchInputError, GateFailed
from edgepipe.gates import parse_gate


def row(model: str, runtime: str = "onnxruntime", p99: float = 5.0, **extra) -> dict:
    lat = {"p50_ms": p99 / 2, "p90_ms": p99 / 1.5, "p99_ms": p99, "mean_ms": p99 / 2, "cold_ms": 9.0,
           "throughput_ips": 100.0}  # fmt: skip
    base = {"model": model, "runtime": runtime, "runtime_label": runtime, "batch_size": 1, "latency": lat,
            "size_mb": 4.0, "memory": {"peak_delta_mb": 12.0}, "is_baseline": model == "fp32"}  # fmt: skip
    return {**base, **extra}


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("acc_drop>0.5", ("acc_drop", ">", 0.5)),
        ("speedup<1.5", ("speedup", "<", 1.5)),
        (" p99_ms >= 10 ", ("p99_ms", ">=", 10.0)),
        ("size_mb<=1e2", ("size_mb", "<=", 100.0)),
        ("acc_drop>-.25", ("acc_drop", ">", -0.25)),
    ],
)
def test_parse_gate_accepts_metric_op_number(text, parsed):
    g = parse_gate(text)
    assert (g.metric, g.op, g.threshold) == parsed and g.text == text


def test_a_percentage_gate_with_a_fraction_threshold_is_refused_with_the_points_to_write():
    with pytest.raises(BenchInputError, match=r"macro_f1 is a percentage .* fix: write macro_f1<80$"):
        parse_gate("macro_f1<0.8")
    assert parse_gate("macro_f1<80").threshold == 80.0 and parse_gate("top1<0").threshold == 0.0


def test_an_agreement_gate_is_a_fraction_like_export_min_agreement():
    with pytest.raises(BenchInputError, match=r"agreement is a fraction .* fix: write agreement<0.99$"):
        parse_gate("agreement<99")
    assert parse_gate("agreement<0.99").threshold == 0.99 and parse_gate("agreement<1").threshold == 1.0


@pytest.mark.parametrize(
    "text", ["acc_drop>>0.5", "acc_drop", "speedup<", "<1.5", "p99_ms=10", "p99_ms>10ms", ""]
)
def test_parse_gate_rejects_malformed_text_in_one_line(text):
    with pytest.raises(BenchInputError, match="malformed gate .*fix: write METRIC<NUMBER") as exc:
        parse_gate(text)
    assert "\n" not in str(exc.value)


def test_parse_gate_names_the_known_metrics():
    with pytest.raises(BenchInputError, match="unknown gate metric 'latency'.*acc_drop, speedup, p50_ms"):
        parse_gate("latency>3")


def test_relative_gates_skip_the_baseline_and_compare_the_others():
    rows = [row("fp32", speedup=1.0, acc_drop=0.0), row("int8", speedup=1.2, acc_drop=0.8)]
    results = evaluate([parse_gate("speedup<1.5"), parse_gate("acc_drop>0.5")], rows)
    assert [(r["gate"], r["model"], r["passed"]) for r in results] == [
        ("speedup<1.5", "int8", False),
        ("acc_drop>0.5", "int8", False),
    ]
    expected = (
        r"gate failed: speedup<1.5 on int8 / onnxruntime / batch 1: value 1.2; acc_drop>0.5 on int8 .*0.8"
    )
    with pytest.raises(GateFailed, match=expected) as exc:
        enforce(results)
    assert exc.value.exit_code == 8 and "\n" not in str(exc.value)


def test_absolute_gates_check_every_row_and_pass_quietly():
    rows = [row("fp32", p99=4.0), row("int8", p99=12.0)]
    results = evaluate([parse_gate("p99_ms>10"), parse_gate("size_mb>100"), parse_gate("peak_mb>=12")], rows)
    failed = [(r["gate"], r["model"], r["value"]) for r in results if not r["passed"]]
    assert failed == [
        ("p99_ms>10", "int8", 12.0),
        ("peak_mb>=12", "fp32", 12.0),
        ("peak_mb>=12", "int8", 12.0),
    ]
    enforce([r for r in results if r["gate"] == "size_mb>100"])  # all passed: no exception


def test_a_gate_without_a_value_fails_rather_than_passes():
    rows = [row("fp32", runtime="torch"), row("int8", runtime="onnxruntime", speedup=None)]
    results = evaluate([parse_gate("speedup<1.5")], rows)
    assert (
        results[0]["passed"] is False and results[0]["reason"] == "no baseline row on this runtime and batch"
    )
    with pytest.raises(GateFailed, match="no value \\(no baseline row"):
        enforce(results)


def test_many_failures_are_summarised_on_one_line():
    rows = [row(f"m{i}", p99=50.0) for i in range(5)]
    with pytest.raises(GateFailed, match="and 2 more \\(see the JSON 'gates'\\)"):
        enforce(evaluate([parse_gate("p99_ms>10")], rows))


@pytest.mark.parametrize(
    "gate, models, data, ref, message",
    [
        ("speedup<1.5", 1, False, False, "give two or more models"),
        ("acc_drop>0.5", 2, False, False, "needs accuracy; fix: pass --data"),
        ("agreement<0.99", 2, True, False, "needs agreement; fix: pass --reference MODEL"),
    ],
)
def test_gates_this_run_cannot_evaluate_are_refused_up_front(gate, models, data, ref, message):
    with pytest.raises(BenchInputError, match=message):
        check_inputs([parse_gate(gate)], models, data, ref)
    check_inputs([parse_gate("p99_ms>10")], 1, False, False)
