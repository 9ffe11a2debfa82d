"""The whole pipeline on tiny generated data: report, caching, and partial reruns.

One build serves the file; a test that builds again does so on its own copy of the run folder, so no test
sees another's reruns and any order (or any single test) passes.
"""

import json
import shutil

import pytest
import yaml

from edgepipe.bench.schema import validate_document
from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe
from tests.conftest import tiny_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("e2e")
    data = make_imagefolder(tmp / "photos", classes=3, per_class=30, size=36)
    recipe_path = tmp / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe(data)))
    out = tmp / "artifacts"
    status = build(load_recipe(recipe_path), out)
    return {"tmp": tmp, "recipe": recipe_path, "out": out, "status": status, "data": data}


@pytest.fixture
def own_run(run, tmp_path):
    """The built run copied for one test: what it reruns stays in its copy."""
    out = tmp_path / "artifacts"
    shutil.copytree(run["out"], out)
    return {**run, "tmp": tmp_path, "out": out}


def test_every_stage_writes_a_manifest_and_the_run_a_report(run):
    run_dir = run["out"] / "tiny"
    assert [n for n, s in run["status"].items() if not s["cached"]] == [
        "split",
        "finetune",
        "qat",
        "export",
        "ptq",
        "bench",
    ]
    for stage in ("split", "finetune", "qat", "export", "ptq", "bench"):
        m = json.loads((run_dir / stage / "manifest.json").read_text())
        assert m["stage"] == stage and m["versions"]["torch"] and m["wall_time_s"] >= 0
    report = json.loads((run_dir / "report.json").read_text())
    validate_document(report)  # the schema `edgepipe bench --json` writes too
    assert (run_dir / "report.md").read_text().startswith("# edgepipe report: tiny")
    assert {"accuracy_vs_latency", "latency"} <= set(report["plots"])
    assert all((run_dir / p).is_file() for p in report["plots"].values())
    rows = {(r["model"], r["runtime_label"]): r for r in report["rows"]}
    assert set(rows) >= {
        ("fp32", "onnxruntime"),
        ("int8-qat", "onnxruntime"),
        ("int8-ptq", "onnxruntime"),
        ("fp32", "openvino-f32"),
        ("int8-qat", "openvino-auto"),  # INT8 as our loaders load it
    }
    gmacs = {r["gmacs"] for r in report["rows"]}
    assert len(gmacs) == 1 and gmacs.pop() > 0, "FP32 and INT8 twins must count the same MACs"
    assert rows[("int8-qat", "onnxruntime")]["int8_mac_share"] > 0.9
    assert rows[("fp32", "onnxruntime")]["int8_mac_share"] == 0
    # int8 weights; on this width-0.25 toy, int32 biases, per-channel scales and graph text weigh more
    assert rows[("int8-qat", "onnxruntime")]["size_mb"] < 0.6 * rows[("fp32", "onnxruntime")]["size_mb"]
    agreement = report["stages"]["export"]["metrics"]
    assert agreement["fp32"]["ort_agreement"] == 1.0
    assert agreement["int8"]["ort_agreement"] >= 0.8
    # the data is easy: a working pipeline must beat chance (33%) clearly
    assert rows[("fp32", "onnxruntime")]["top1"] > 60


def test_second_build_skips_every_stage(own_run):
    status = build(load_recipe(own_run["recipe"]), own_run["out"])
    assert all(s["cached"] for s in status.values())


def test_only_and_from_rerun_what_they_name(own_run):
    status = build(load_recipe(own_run["recipe"]), own_run["out"], only="ptq")
    assert [n for n, s in status.items() if not s["cached"]] == ["ptq"] and "bench" not in status
    status = build(load_recipe(own_run["recipe"]), own_run["out"], only="bench")
    assert [n for n, s in status.items() if not s["cached"]] == ["bench"]
    status = build(load_recipe(own_run["recipe"]), own_run["out"], from_stage="ptq")
    assert [n for n, s in status.items() if not s["cached"]] == ["ptq", "bench"]


def test_changing_a_qat_value_reruns_qat_export_and_bench_only(own_run):
    recipe = yaml.safe_load(own_run["recipe"].read_text())
    recipe["qat"]["lr"] = 0.0002
    changed = own_run["tmp"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(recipe))
    status = build(load_recipe(changed), own_run["out"])
    assert [n for n, s in status.items() if not s["cached"]] == ["qat", "export", "bench"]
