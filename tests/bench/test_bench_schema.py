"""`edgepipe bench --json` and a run's report.json are one documented schema, written by the same code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgepipe import stages
from edgepipe.bench.report import write_run_report
from edgepipe.bench.schema import MODELS, validate_document
from edgepipe.errors import BenchInputError
from edgepipe.recipe import parse_recipe
from edgepipe.stages.base import StageContext
from tests.bench.test_bench_cli import FAST, bench, zoo  # noqa: F401  (zoo: module fixture)
from tests.conftest import tiny_recipe

DOC = Path(__file__).resolve().parents[2] / "docs" / "report_schema.md"


@pytest.fixture(scope="module")
def run_report(zoo, tmp_path_factory) -> Path:  # noqa: F811
    """The bench stage on the zoo's tiny models over a real split, then the run report from its output."""
    run_dir = tmp_path_factory.mktemp("run")
    recipe = parse_recipe(tiny_recipe(zoo["photos"], bench={"warmup": 1, "min_iters": 3, "threads": 1}))
    status = {}
    for name, inputs in (
        ("split", {}),
        ("bench", {"onnx_fp32": zoo["fp32"], "onnx_int8": zoo["int8"], "ir_fp32": zoo["ir"]}),
    ):
        out = run_dir / name
        out.mkdir()
        if name == "bench":
            inputs["split"] = run_dir / "split" / "split.json"
        ctx = StageContext(recipe=recipe, out_dir=out, inputs=inputs, run_dir=run_dir)
        result = stages.get(name).run(ctx)
        outputs = {k: {"file": v} for k, v in result.outputs.items()}
        manifest = {"outputs": outputs, "metrics": result.metrics, "wall_time_s": 0.5}
        status[name] = {"cached": False, "manifest": manifest}
    write_run_report(run_dir, recipe, status)
    return run_dir


def test_both_outputs_validate_against_one_schema(zoo, run_report, tmp_path):  # noqa: F811
    out = tmp_path / "r.json"
    res = bench(zoo["fp32"], zoo["int8"], "-r", "onnxruntime", "-r", "openvino", "--data", zoo["photos"],
                "--reference", zoo["fp32"], "--json", out, *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    cli_doc = validate_document(json.loads(out.read_text()))
    run_doc = validate_document(json.loads((run_report / "report.json").read_text()))
    assert cli_doc.schema_ == run_doc.schema_ == "edgepipe.bench/3"
    assert cli_doc.recipe is None and cli_doc.stages is None and run_doc.recipe == "tiny"
    # both end with "which to ship", one verdict per runtime benched, judged on the measured top-1
    for doc in (cli_doc, run_doc):
        assert {v.runtime for v in doc.verdicts or []} == {"onnxruntime", "openvino"}
        assert all(v.model is not None and v.top1 >= v.floor for v in doc.verdicts or [])
    assert "## Which to ship" in res.output
    assert set(run_doc.stages) == {"split", "bench"}  # type: ignore[arg-type]
    # the same row keys whichever tool measured
    cli_rows = json.loads(out.read_text())["rows"]
    run_rows = json.loads((run_report / "report.json").read_text())["rows"]
    assert {tuple(r) for r in cli_rows} == {tuple(r) for r in run_rows}


def test_run_report_rows_name_their_baseline_and_carry_the_plots(run_report):
    doc = json.loads((run_report / "report.json").read_text())
    rows = {(r["model"], r["runtime_label"]): r for r in doc["rows"]}
    # FP32 in every native float mode (+ openvino-bf16 on a CPU with native bf16), INT8 as our loaders load it
    assert set(rows) - {("fp32", "openvino-bf16")} == {
        ("fp32", "onnxruntime"), ("fp32", "openvino-f32"),
        ("int8-qat", "onnxruntime"), ("int8-qat", "openvino-auto"),
    }  # fmt: skip
    int8_ov, fp32_ov = rows["int8-qat", "openvino-auto"], rows["fp32", "openvino-f32"]
    fastest = min((r for r in doc["rows"] if r["model"] == "fp32" and r["runtime"] == "openvino"),
                  key=lambda r: r["latency"]["p50_ms"])  # fmt: skip
    assert doc["baseline"] == {"model": "fp32", "match": ["runtime", "batch_size"], "pick": "fastest"}
    assert int8_ov["baseline"] == {k: fastest[k] for k in ("model", "runtime", "precision", "runtime_label",
                                                           "batch_size")}  # fmt: skip
    assert int8_ov["speedup"] == fastest["latency"]["p50_ms"] / int8_ov["latency"]["p50_ms"]
    assert fastest["is_baseline"] and fastest["speedup"] == 1.0 and fastest["acc_drop"] == 0.0
    assert fp32_ov["file"].endswith("fp32.xml") and fp32_ov["kind"] == "openvino-ir"
    for r in doc["rows"]:
        assert r["top1_per_ms"] == r["top1"] / (r["latency"]["p50_ms"] / r["batch_size"])
        assert "samples_ms" not in r["latency"] and r["images"] == doc["data"]["images"] > 0
    assert doc["plots"] == {"accuracy_vs_latency": "accuracy_vs_latency.png", "latency": "latency.png"}
    md = (run_report / "report.md").read_text()
    # INT8 on OpenVINO divides by another runtime label (the fastest FP32 float mode): each cell names it
    assert md.startswith("# edgepipe report: tiny\n") and "| speed-up |" in md
    assert f"x vs fp32 · {fastest['runtime_label']} · bs 1 (paired " in md
    assert "the fastest **fp32** row" in md
    assert md.count("- **onnxruntime**: ship **") == 1 and "## Which to ship" in md
    # every row timed again in alternating rounds: the paired speed-up is the median of per-round ratios
    a, b = fastest["latency"]["round_medians_ms"], int8_ov["latency"]["round_medians_ms"]
    assert len(a) == len(b) > 0 and "alternating rounds" in md
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    assert int8_ov["speedup_paired"] == pytest.approx(float(np.median(ratios)))
    for name in doc["plots"].values():
        assert f"]({name})" in md and (run_report / name).read_bytes()[:4] == b"\x89PNG"
    preds = json.loads((run_report / "bench" / "predictions.json").read_text())["preds"]
    assert set(preds) == {f"{m}|{rt}" for m, rt in rows}


def test_a_document_off_the_schema_is_refused_in_one_line(run_report):
    doc = json.loads((run_report / "report.json").read_text())
    doc["rows"][0]["speedup_vs_fp32"] = 1.0  # a key of the old run-report schema
    with pytest.raises(BenchInputError, match=r"^edgepipe.bench/3 document: rows.0.speedup_vs_fp32: Extra "):
        validate_document(doc)
    with pytest.raises(BenchInputError, match=r"schema is 'edgepipe.report/1', not edgepipe.bench/3; fix:"):
        validate_document({**doc, "schema": "edgepipe.report/1"})


def test_every_schema_field_is_documented():
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.MULTILINE))
    fields = {f.alias or n for m in MODELS for n, f in m.model_fields.items()}
    assert fields - documented == set(), "document these fields in docs/report_schema.md"
    assert "edgepipe.bench/3" in text
