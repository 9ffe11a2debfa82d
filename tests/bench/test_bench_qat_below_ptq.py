"""A QAT model below the PTQ baseline is said in the run report's first lines."""

from __future__ import annotations

from edgepipe.bench.report import WARNING, qat_below_ptq


def _r(model, runtime, top1):
    return {"model": model, "runtime": runtime, "top1": top1}


def test_qat_below_ptq_is_a_warning_per_runtime():
    rows = [_r("int8-qat", "onnxruntime", 90.89), _r("int8-ptq", "onnxruntime", 91.04),
            _r("int8-qat", "openvino", 91.10), _r("int8-ptq", "openvino", 91.00)]  # fmt: skip
    notes = qat_below_ptq(rows)
    assert len(notes) == 1 and notes[0].startswith(WARNING)
    assert "below the PTQ baseline on onnxruntime: top-1 90.89% vs 91.04%" in notes[0]
    assert qat_below_ptq([_r("int8-qat", "onnxruntime", 92.0), _r("int8-ptq", "onnxruntime", 91.0)]) == []
    assert qat_below_ptq([_r("int8-qat", "onnxruntime", 92.0)]) == []  # no PTQ row: nothing to compare


def test_warnings_open_the_markdown():
    from edgepipe.bench.report import markdown

    doc = {
        "recipe": "r",
        "rows": [],
        "notes": [f"{WARNING}QAT INT8 ends below the PTQ baseline", "GMACs are equal"],
        "settings": {"threads": 2, "warmup": 1, "min_iters": 1, "min_seconds": 0.0},
        "environment": {},
        "baseline": {"model": "fp32", "match": ["runtime", "batch_size"], "pick": "fastest"},
    }
    lines = markdown(doc).splitlines()
    assert lines[0] == "# edgepipe report: r"
    assert lines[2] == f"**{WARNING}QAT INT8 ends below the PTQ baseline**"
    doc["notes"] = ["GMACs are equal"]
    assert "WARNING" not in markdown(doc).splitlines()[2]
