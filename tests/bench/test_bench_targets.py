"""`edgepipe bench --target`: each .onnx on each named CPU's own ONNX Runtime kernels, scored against its host
run, into the document's ``targets`` and the Markdown targets table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepipe.bench.schema import validate_document
from edgepipe.targets import placement
from tests.bench.test_bench_cli import CLASSES, FAST, PRE, bench, export
from tests.conftest import make_imagefolder

HOST_HEADER = "agree % vs the same model on ONNX Runtime here (host)"


def _quantize_s7(fp32: Path, out: Path) -> Path:
    """ONNX Runtime static QDQ quantization with 7-bit weights (reduce_range): the integers every target's
    kernels compute exactly, AVX2's vpmaddubsw included."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    batches = iter([{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(batches, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("targets")
    fp32 = export(root / "fp32.onnx", {"classes": CLASSES, "preprocessing": PRE})
    return {
        "fp32": fp32,
        "int8": _quantize_s7(fp32, root / "int8_s7.onnx"),
        "fixed": export(root / "fixed.onnx", {"classes": CLASSES, "preprocessing": PRE}, dynamic=False),
        "photos": make_imagefolder(root / "photos", 3, 8, 32),
    }


def _one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], res.output
    return lines[0]


def test_host_target_agrees_with_itself_and_the_document_validates(tiny, tmp_path):
    out = tmp_path / "r.json"
    res = bench(tiny["int8"], "--data", tiny["photos"], "--target", "host", "--target-images", "10",
                "--json", out, *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    validate_document(doc)
    (row,) = [r for r in doc["rows"] if r["runtime"] == "onnxruntime" and r["batch_size"] == 1]
    (t,) = doc["targets"]
    assert (t["model"], t["target"], t["how"]) == ("int8_s7.onnx", "host", "native")
    assert t["runtime"] == "onnxruntime"
    assert t["images"] == 10 and t["agreement"] == 1.0 and t["top1"] is not None and t["reason"] == ""
    assert t["latency_ms"] == row["latency"]["p50_ms"]  # the host row: the bench's own p50 at batch 1
    assert doc["settings"]["targets"] == ["host"] and doc["settings"]["target_images"] == 10
    note = next(n for n in doc["notes"] if n.startswith("targets: "))
    assert "seeded random subset (seed 0, --target-images 10) of the 24 images" in note
    assert "the same model on ONNX Runtime on this machine (host)" in note
    # printed with the rest of the report, the header naming what agreement compares with
    assert "## Targets" in res.output and HOST_HEADER in res.output
    assert "| int8_s7.onnx | host | " in res.output and "| 10 | 100.00 |" in res.output  # 1.0 shown as %

    # all images when there are fewer than --target-images; without --target nothing changes
    res = bench(tiny["int8"], "--data", tiny["photos"], "--target", "host", "--json", out, *FAST)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["targets"][0]["images"] == 24 and doc["targets"][0]["agreement"] == 1.0
    assert any(n.startswith("targets: each .onnx ran on all 24 images") for n in doc["notes"])
    res = bench(tiny["int8"], "--data", tiny["photos"], "--json", out, *FAST)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["targets"] is None and "## Targets" not in res.output
    assert doc["settings"]["targets"] is None and not any(n.startswith("targets:") for n in doc["notes"])
    validate_document(doc)


def test_reference_model_and_a_model_the_runner_cannot_feed(tiny, tmp_path):
    out = tmp_path / "r.json"
    res = bench(tiny["int8"], tiny["fixed"], "--data", tiny["photos"], "--reference", tiny["fp32"],
                "--target", "host", "--json", out, *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    validate_document(doc)
    by_model = {t["model"]: t for t in doc["targets"]}
    row = next(r for r in doc["rows"] if r["model"] == "int8_s7.onnx")
    # vs the reference: the host target scores as the bench's own onnxruntime row does
    assert by_model["int8_s7.onnx"]["agreement"] == row["agreement"]
    assert 0 <= row["agreement"] <= 1  # a bench row and a target row: both a fraction, one function
    assert by_model["int8_s7.onnx"]["top1"] == row["top1"]
    fixed = by_model["fixed.onnx"]
    assert fixed["how"] == "not checked" and fixed["agreement"] is None and fixed["images"] == 0
    assert "fixed batch of 1" in fixed["reason"] and "fix: " in fixed["reason"]
    assert f"agree % vs {tiny['fp32']} on onnxruntime" in res.output  # the reference as rows name it


def test_unknown_target_is_one_line(tiny):
    line = _one_line_error(bench(tiny["int8"], "--data", tiny["photos"], "--target", "cortex-a99", *FAST))
    assert "unknown target 'cortex-a99'" in line and "x86-64-v3" in line


def test_target_without_data_is_one_line(tiny):
    line = _one_line_error(bench(tiny["int8"], "--target", "host", *FAST))
    assert "--target needs images" in line and "fix: pass --data" in line


def test_emulated_haswell_agrees_on_a_7_bit_weight_model(tiny, tmp_path):
    where = placement("x86-64-v3")
    if not where.checked:
        pytest.skip(f"x86-64-v3 cannot be checked on this machine: {where.reason}")
    out = tmp_path / "r.json"
    res = bench(tiny["int8"], "--data", tiny["photos"], "--target", "x86-64-v3", "--json", out, *FAST)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    validate_document(doc)
    (t,) = doc["targets"]
    assert (t["target"], t["how"]) == ("x86-64-v3", where.how)  # emulated, unless this host is one
    assert t["agreement"] == 1.0 and t["images"] == 24 and t["latency_ms"] is None
    assert t["kernel"].startswith("AVX2")
