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


def test_an_unexpected_exception_is_one_line_naming_the_log_with_its_traceback(tmp_path, imagefolder,
                                                                               monkeypatch):
    import edgepipe.pipeline

    def boom(*args, **kwargs):
        raise KeyError("no such tensor\nsecond line")

    monkeypatch.setattr(edgepipe.pipeline, "build", boom)
    (tmp_path / "out" / "r").mkdir(parents=True)
    res = _build(tmp_path, {"name": "r", "data": {"root": str(imagefolder)}, "stages": ["finetune"]})
    log = tmp_path / "out" / "r" / "edgepipe-error.log"
    lines = res.output.strip().splitlines()
    assert res.exit_code == 70 and len(lines) == 1 and "Traceback" not in res.output
    assert lines[0].startswith("error: unexpected KeyError: 'no such tensor") and str(log) in lines[0]
    assert "Traceback (most recent call last)" in log.read_text() and "in boom" in log.read_text()


def test_an_unexpected_exception_without_a_run_folder_logs_to_the_cache(tmp_path, monkeypatch):
    import edgepipe.recipe

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(edgepipe.recipe, "load_recipe", boom)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = _build(tmp_path, {"name": "r"})
    log = tmp_path / "cache" / "edgepipe" / "last-error.log"
    assert res.exit_code == 70 and res.output.strip().count("\n") == 0 and str(log) in res.output
    assert "ZeroDivisionError: division by zero" in log.read_text()
