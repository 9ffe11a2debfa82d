"""bench.fail_if: the recipe's gates, checked by the bench stage with the same code as `edgepipe bench`."""

from __future__ import annotations

import pytest

from edgepipe.bench.rows import add_relative, build_row
from edgepipe.errors import GateFailed, RecipeError
from edgepipe.recipe import parse_recipe
from edgepipe.stages.bench import BASELINE, check_gates

BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


def _row(
    model: str, size_mb: float, p50: float, top1: float, runtime: str = "onnxruntime", precision: str = "f32"
) -> dict:
    precision = precision if runtime == "openvino" else None
    return build_row(
        model=model, file=f"{model}.onnx", kind="onnx", runtime=runtime, precision=precision, perf_hint=None,
        threads=1, runtime_options={}, size_mb=size_mb, compute={"gflops": 0.1},
        latency={"batch_size": 1, "p50_ms": p50}, memory=None, scores={"top1": top1}, environment_id="e",
    )  # fmt: skip


ROWS = [_row("fp32", 97.8, 10.0, 80.0), _row("int8-qat", 24.6, 5.0, 79.5), _row("int8-ptq", 24.6, 6.0, 78.0),
        _row("fp32", 97.8, 8.0, 80.0, "openvino"), _row("fp32", 97.8, 6.0, 79.9, "openvino", "bf16"),
        _row("int8-qat", 24.6, 2.0, 79.0, "openvino", "auto")]  # fmt: skip
add_relative(ROWS, BASELINE)


def test_fail_if_gates_are_validated_when_the_recipe_is_read():
    assert parse_recipe({**BASE, "bench": {"fail_if": ["size_mb>100"]}}).bench.fail_if == ("size_mb>100",)
    with pytest.raises(RecipeError, match=r"bench\.fail_if: malformed gate 'size_mb>>1'; fix:"):
        parse_recipe({**BASE, "bench": {"fail_if": ["size_mb>>1"]}})
    with pytest.raises(RecipeError, match=r"bench\.fail_if: gate 'agreement<0.99': the bench stage does not"):
        parse_recipe({**BASE, "bench": {"fail_if": ["agreement<0.99"]}})


def test_size_limit_passes_when_every_model_is_under_it():
    results = check_gates(("size_mb>100",), ROWS)
    assert len(results) == 6 and all(r["passed"] for r in results)
    assert check_gates((), ROWS) == []


def test_failed_gate_fails_the_stage_naming_gate_model_and_value():
    with pytest.raises(GateFailed, match=r"bench\.fail_if: gate failed: size_mb>50 on fp32 / onnxruntime / "
                       r"batch 1: value 97\.8; .* on fp32 / openvino-bf16 / batch 1: value 97\.8; fix:"):
        check_gates(("size_mb>50",), ROWS)


def test_relative_gates_compare_with_the_fastest_fp32_float_mode_on_the_same_runtime():
    ok = check_gates(("acc_drop>2", "speedup<1.5"), ROWS)
    assert {(r["model"], r["runtime"]) for r in ok} == {
        ("int8-qat", "onnxruntime"), ("int8-ptq", "onnxruntime"), ("int8-qat", "openvino-auto"),
    }  # fmt: skip  (fp32 / openvino-f32, slower than bf16, is a float mode, not a model the gate judges)
    speedups = {(r["model"], r["runtime"]): r["value"] for r in ok if r["gate"] == "speedup<1.5"}
    # 6 ms over 2 ms: OpenVINO's bf16 FP32 row (faster than its f32 one, 8 ms), not ORT's
    assert speedups["int8-qat", "openvino-auto"] == 3.0
    f32 = next(r for r in ROWS if r["runtime_label"] == "openvino-f32")
    assert f32["speedup"] == 0.75 and f32["baseline"]["runtime_label"] == "openvino-bf16"
    with pytest.raises(GateFailed, match=r"acc_drop>1 on int8-ptq"):
        check_gates(("acc_drop>1",), ROWS)


def test_paired_speedup_is_the_median_of_per_round_ratios_so_drift_cancels():
    """The host slowed down 2x after three rounds: within each round INT8 is 2x faster, whatever the p50s."""
    rows = [_row("fp32", 97.8, 3.0, 80.0), _row("int8-qat", 24.6, 2.0, 79.5),
            _row("int8-ptq", 24.6, 2.0, 79.0)]
    rows[0]["latency"]["round_medians_ms"] = [2.0, 2.0, 2.0, 4.0, 4.0, 4.0]
    rows[1]["latency"]["round_medians_ms"] = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    add_relative(rows, BASELINE)
    assert rows[1]["speedup"] == 1.5 and rows[1]["speedup_paired"] == 2.0
    assert rows[0]["speedup_paired"] == 1.0
    assert rows[2]["speedup_paired"] is None  # no rounds for this row: nothing to pair
