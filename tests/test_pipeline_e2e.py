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
from tests.conftest import AUTOTUNE, tiny_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("e2e")
    data = make_imagefolder(tmp / "photos", classes=3, per_class=30, size=36)
    recipe_path = tmp / "tiny.yaml"
    # targets: null -> the host plus every target this machine can check (make test installs the emulators);
    # training layout, compile and precision chosen by autotune, as by default
    recipe_path.write_text(yaml.safe_dump(tiny_recipe(data, targets=None, **AUTOTUNE)))
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
        "explain",
        "export",
        "ptq",
        "bench",
    ]
    for stage in ("split", "finetune", "qat", "explain", "export", "ptq", "bench"):
        m = json.loads((run_dir / stage / "manifest.json").read_text())
        assert m["stage"] == stage and m["versions"]["torch"] and m["wall_time_s"] >= 0
        if stage in ("finetune", "qat"):  # how it trained (autotune's choice) and why
            assert m["metrics"]["speed"]["chosen"] in m["metrics"]["speed"]["candidates"]
    report = json.loads((run_dir / "report.json").read_text())
    validate_document(report)  # the schema `edgepipe bench --json` writes too
    assert (run_dir / "report.md").read_text().startswith("# edgepipe report: tiny")
    assert {"accuracy_vs_latency", "latency", "gradcam"} <= set(report["plots"])
    assert "](explain/gradcam_grid.png)" in (run_dir / "report.md").read_text()
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
    # the measuring side profiles what export shipped: per-op accounts beside the rows, noted in the report
    account = json.loads((run_dir / "bench" / "int8.ops.json").read_text())
    assert set(account) == {"onnxruntime", "openvino"} and account["onnxruntime"]["int8_time_share"] > 0.5
    assert any("per-op profile: bench/int8.ops.json" in n for n in report["notes"])
    assert not list((run_dir / "export").glob("*.ops.json"))
    # the data is easy: a working pipeline must beat chance (33%) clearly
    assert rows[("fp32", "onnxruntime")]["top1"] > 60


def test_report_shows_int8_on_every_target_with_how_it_ran(run):
    """The default targets: the host natively, every target this machine can check emulated, each scored on
    its own kernels; emulated rows carry no latency."""
    from edgepipe.targets import resolve

    run_dir = run["out"] / "tiny"
    report = json.loads((run_dir / "report.json").read_text())
    onnx_rows = [t for t in report["targets"] if t["runtime"] == "onnxruntime"]
    assert [t["target"] for t in onnx_rows] == [p.target.name for p in resolve(None)]
    assert onnx_rows[0]["target"] == "host" and onnx_rows[0]["how"] == "native"
    assert onnx_rows[0]["latency_ms"] > 0
    for t in onnx_rows:
        assert t["how"] in ("native", "emulated") and t["agreement"] >= 0.8 and t["images"] > 0
        if t["how"] == "emulated":
            assert t["latency_ms"] is None
    assert any(t["runtime"] == "openvino" for t in report["targets"])
    md = (run_dir / "report.md").read_text()
    assert "## Targets" in md and "| int8-qat | host |" in md
    export = report["stages"]["export"]["metrics"]["int8"]
    assert export["numerics"] == "s7"


def test_shipped_files_are_shaped_for_their_runtime(run):
    """int8.onnx: depthwise widths padded to 16 for ONNX Runtime (recorded); the IRs: batch 1 fixed, so a
    plain compile_model gets static kernels, and no padding (OpenVINO gains nothing from it)."""
    import onnx
    import openvino as ov

    export = run["out"] / "tiny" / "export"
    padded = json.loads((export / "manifest.json").read_text())["metrics"]["int8"]["padded_channels"]
    assert padded and all(r["padded"] % 16 == 0 and r["padded"] > r["channels"] for r in padded)
    groups = {a.i for n in onnx.load(str(export / "int8.onnx")).graph.node for a in n.attribute
              if n.op_type == "Conv" and a.name == "group" and a.i > 1}
    assert groups and all(g % 16 == 0 for g in groups)
    core = ov.Core()
    for name in ("fp32.xml", "int8.xml"):
        shape = core.read_model(str(export / name)).inputs[0].get_partial_shape()
        assert shape.is_static and shape[0].get_length() == 1, (name, shape)
    ir = core.read_model(str(export / "int8.xml"))
    ir_groups = {op.get_output_partial_shape(0)[1].get_length() for op in ir.get_ops()
                 if op.get_type_name() == "GroupConvolution"}
    assert any(g % 16 for g in ir_groups), "the IR should keep the model's own widths"


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


def test_changing_a_qat_value_reruns_qat_explain_export_and_bench_only(own_run):
    recipe = yaml.safe_load(own_run["recipe"].read_text())
    recipe["qat"]["lr"] = 0.0002
    changed = own_run["tmp"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(recipe))
    status = build(load_recipe(changed), own_run["out"])
    assert [n for n, s in status.items() if not s["cached"]] == ["qat", "explain", "export", "bench"]


def test_explain_grid_shows_fp32_and_qat_on_the_same_images_each_class_right_and_wrong(run):
    from PIL import Image

    stage = run["out"] / "tiny" / "explain"
    doc = json.loads((stage / "examples.json").read_text())
    assert doc["classes"] == ["class_0", "class_1", "class_2"] and doc["method"] == "gradcam"
    # 32-pixel input: features.16 is 1x1 there, so an earlier block with a map of at least 4x4 is explained
    assert doc["layer"].startswith("features.") and min(doc["map_size"]) >= 4
    images = doc["images"]
    assert images and {e["kind"] for e in images} <= {"correct", "wrong"}
    for e in images:
        assert doc["classes"][e["label"]] == e["class"]
        assert e["fp32"]["correct"] == (e["kind"] == "correct") == (e["fp32"]["pred"] == e["class"])
        assert 0 < e["fp32"]["prob"] <= 1 and 0 < e["qat"]["prob"] <= 1 and "correct" in e["qat"]
    # at most one of each kind per class (per_class 1), the most confident one first
    kinds = [(e["class"], e["kind"]) for e in images]
    assert len(kinds) == len(set(kinds)) and {k for _, k in kinds} >= {"correct"}
    with Image.open(stage / "gradcam_grid.png") as im:
        assert im.width > 400 and im.height > 400  # 3 rows x 4 columns of overlays


def test_predict_on_the_runs_int8_onnx_one_row_per_input_and_the_same_accuracy_as_bench(run, tmp_path):
    """The issue's check on the tiny run: the run's test images as an ImageFolder with broken files mixed in;
    predict keeps every input in order, counts the broken ones, and scores the good ones as bench does."""
    import csv
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from edgepipe.cli import app

    run_dir = run["out"] / "tiny"
    split = json.loads((run_dir / "split" / "split.json").read_text())
    folder = tmp_path / "test_images"
    for ref, label in split["test"]:
        (folder / split["classes"][label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(run["data"] / ref, folder / split["classes"][label] / ref.replace("/", "_"))
    good = shutil.copytree(folder, tmp_path / "good")
    first = next((folder / split["classes"][0]).iterdir())
    (folder / split["classes"][0] / "broken_text.png").write_text("not an image")
    (folder / split["classes"][1] / "broken_truncated.png").write_bytes(first.read_bytes()[:60])
    (folder / split["classes"][2] / "broken_empty.png").write_bytes(b"")
    model = run_dir / "export" / "int8.onnx"
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(model), str(folder), "--eval", "--out", str(tmp_path / "p.csv"),
                              "--json", str(tmp_path / "p.json"), "--threads", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    inputs = sorted(p for p in folder.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == [str(p) for p in inputs]  # one row per input, in input order
    assert sorted(Path(r["path"]).name for r in rows if r["error"]) == [
        "broken_empty.png", "broken_text.png", "broken_truncated.png"
    ]  # fmt: skip
    n = len(inputs)
    assert f"{n} inputs, {n} rows" in res.stderr and "3 unreadable" in res.stderr
    evaluation = json.loads((tmp_path / "p.json").read_text())["evaluation"]
    assert evaluation["images"] == len(split["test"]) and evaluation["unscored"] == 3
    bench = runner.invoke(app, ["bench", str(model), "--data", str(good), "--runtime", "onnxruntime",
                                "--threads", "1", "--warmup", "1", "--min-iters", "2", "--min-seconds", "0",
                                "--json", str(tmp_path / "b.json")])  # fmt: skip
    assert bench.exit_code == 0, bench.output
    (row,) = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert evaluation["top1"] == row["top1"] and evaluation["macro_f1"] == row["macro_f1"]
    # and both equal the build's own bench row for the INT8 model on this test split
    report = json.loads((run_dir / "report.json").read_text())
    built = next(r for r in report["rows"] if (r["model"], r["runtime_label"]) == ("int8-qat", "onnxruntime"))
    assert evaluation["top1"] == built["top1"]
