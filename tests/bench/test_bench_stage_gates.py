"""bench.fail_if: the recipe's gates, checked by the bench stage with the same code as `edgepipe bench`."""

from __future__ import annotations

import pytest

from edgepipe.bench.rows import add_relative, build_row
from edgepipe.errors import GateFailed, RecipeError
from edgepipe.recipe import parse_recipe
from edgepipe.stages.bench import BASELINE, check_gates

BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


def _row(model: str, size_mb: float, p50: float, top1: float, runtime: str = "onnxruntime") -> dict:
    precision = "f32" if runtime == "openvino" else None
    return build_row(
        model=model, file=f"{model}.onnx", kind="onnx", runtime=runtime, precision=precision, perf_hint=None,
        threads=1, runtime_options={}, size_mb=size_mb, compute={"gflops": 0.1},
        latency={"batch_size": 1, "p50_ms": p50}, memory=None, scores={"top1": top1}, environment_id="e",
    )  # fmt: skip


ROWS = [_row("fp32", 97.8, 10.0, 80.0), _row("int8-qat", 24.6, 5.0, 79.5), _row("int8-ptq", 24.6, 6.0, 78.0),
        _row("fp32", 97.8, 8.0, 80.0, "openvino"), _row("int8-qat", 24.6, 2.0, 79.0, "openvino")]  # fmt: skip
add_relative(ROWS, BASELINE)


def test_fail_if_gates_are_validated_when_the_recipe_is_read():
    assert parse_recipe({**BASE, "bench": {"fail_if": ["size_mb>100"]}}).bench.fail_if == ("size_mb>100",)
    with pytest.raises(RecipeError, match=r"bench\.fail_if: malformed gate 'size_mb>>1'; fix:"):
        parse_recipe({**BASE, "bench": {"fail_if": ["size_mb>>1"]}})
    with pytest.raises(RecipeError, match=r"bench\.fail_if: gate 'agreement<99': the bench stage does not"):
        parse_recipe({**BASE, "bench": {"fail_if": ["agreement<99"]}})


def test_size_limit_passes_when_every_model_is_under_it():
    results = check_gates(("size_mb>100",), ROWS)
    assert len(results) == 5 and all(r["passed"] for r in results)
    assert check_gates((), ROWS) == []


def test_failed_gate_fails_the_stage_naming_gate_model_and_value():
    with pytest.raises(GateFailed, match=r"bench\.fail_if: gate failed: size_mb>50 on fp32 / onnxruntime / "
                       r"batch 1: value 97\.8; .* on fp32 / openvino-f32 / batch 1: value 97\.8; fix:"):
        check_gates(("size_mb>50",), ROWS)


def test_relative_gates_compare_with_fp32_on_the_same_runtime():
    ok = check_gates(("acc_drop>2", "speedup<1.5"), ROWS)
    assert {(r["model"], r["runtime"]) for r in ok} == {
        ("int8-qat", "onnxruntime"), ("int8-ptq", "onnxruntime"), ("int8-qat", "openvino-f32")
    }  # fmt: skip
    speedups = {(r["model"], r["runtime"]): r["value"] for r in ok if r["gate"] == "speedup<1.5"}
    assert speedups["int8-qat", "openvino-f32"] == 4.0  # 8 ms over 2 ms: the OpenVINO fp32 row, not ORT's
    with pytest.raises(GateFailed, match=r"acc_drop>1 on int8-ptq"):
        check_gates(("acc_drop>1",), ROWS)
