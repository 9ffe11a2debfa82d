import subprocess
import sys

import yaml
from typer.testing import CliRunner

from edgepipe import __version__
from edgepipe.cli import app
from tests.conftest import hold_run_lock

runner = CliRunner()


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"edgepipe {__version__}"
    out = runner.invoke(app, ["build", "--help"]).output
    for option in ("--force", "--from", "--only", "--out"):
        assert option in out


def _build(tmp_path, recipe: dict, *args):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return runner.invoke(app, ["build", str(p), "--out", str(tmp_path / "out"), *args])


def test_misspelt_key_is_one_line_and_exit_2(tmp_path):
    res = _build(tmp_path, {"name": "r", "data": {"dataset": "fashion-mnist"}, "qat": {"epohcs": 1}})
    assert res.exit_code == 2
    assert res.output.strip() == (
        f"error: {tmp_path / 'r.yaml'}: qat.epohcs: unknown key; did you mean 'epochs'?"
    )


def test_missing_dataset_folder_is_one_line_and_nonzero(tmp_path):
    res = _build(tmp_path, {"name": "r", "data": {"root": str(tmp_path / "nowhere")}})
    assert res.exit_code == 3
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "dataset folder not found" in lines[0]


def test_unknown_stage_in_recipe_and_flag(tmp_path, imagefolder):
    res = _build(
        tmp_path, {"name": "r", "data": {"root": str(imagefolder)}, "stages": ["finetune", "distill"]}
    )
    assert res.exit_code == 2 and "stages.1: 'distill' is not one of" in res.output
    res = _build(tmp_path, {"name": "r", "data": {"root": str(imagefolder)}}, "--only", "distill")
    assert res.exit_code == 2 and "--only distill: not a stage" in res.output


def test_errors_never_print_a_traceback(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: r\ndata: {dataset: fashion-mnist}\nbench: {threads: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "edgepipe", "build", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {p}: bench.threads: must be >= 1 (got 0)"


def test_bench_rejects_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("hello")
    res = runner.invoke(app, ["bench", str(bad)])
    assert res.exit_code == 7 and "not an ONNX model" in res.output


def test_build_into_a_run_folder_another_build_holds_is_refused_in_one_line(tmp_path, imagefolder):
    holder = hold_run_lock(tmp_path / "out" / "r")
    try:
        res = _build(tmp_path, {"name": "r", "data": {"root": str(imagefolder)}, "stages": ["finetune"]})
    finally:
        holder.kill()
        holder.wait()
    lines = res.output.strip().splitlines()
    assert res.exit_code == 9 and len(lines) == 1
    assert f"pid {holder.pid}" in lines[0] and "fix: wait" in lines[0]
