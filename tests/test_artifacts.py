import json
import os
import signal
import subprocess
import sys

import pytest

from edgepipe.artifacts import (
    atomic_path,
    atomic_write_json,
    hash_json,
    read_manifest,
    remove_leftovers,
    run_lock,
    staging_dir,
)
from edgepipe.errors import RunFolderBusy
from tests.conftest import hold_run_lock


def test_atomic_write_replaces_whole_file(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["model.onnx"]


def test_failed_stage_keeps_previous_result(tmp_path):
    final = tmp_path / "qat"
    with staging_dir(final) as d:
        (d / "manifest.json").write_text('{"v": 1}')
    with pytest.raises(KeyboardInterrupt), staging_dir(final) as d:
        (d / "manifest.json").write_text('{"v": 2}')
        raise KeyboardInterrupt
    assert read_manifest(final) == {"v": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["qat"]


def test_hash_json_is_order_independent():
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})


def test_an_object_json_cannot_hold_is_a_typed_error(tmp_path):
    from edgepipe.errors import EdgepipeError

    with pytest.raises(EdgepipeError, match="cannot write a object to JSON; this is a bug"):
        atomic_write_json(tmp_path / "m.json", {"x": object()})
    assert not (tmp_path / "m.json").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_build_is_refused_naming_the_holder_and_a_killed_holder_blocks_nobody(tmp_path):
    run_dir = tmp_path / "out" / "r"
    holder = hold_run_lock(run_dir)
    try:
        with pytest.raises(RunFolderBusy) as exc, run_lock(run_dir):
            pass
        msg = str(exc.value)
        assert f"pid {holder.pid}" in msg and "started" in msg and "--out" in msg and "\n" not in msg
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file and holder record stay
        holder.wait()
    assert (run_dir / ".build.lock.json").exists()
    with run_lock(run_dir):  # the OS released the dead holder's lock
        assert json.loads((run_dir / ".build.lock.json").read_text())["pid"] == os.getpid()


def test_leftovers_of_dead_builds_are_removed_at_the_start_and_live_ones_kept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    for name in (f".finetune.tmp-{dead}", f".qat.old-{dead}", f".ptq.tmp-{alive}", "finetune"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.onnx").write_text("partial")
    (tmp_path / f".report.md.tmp-{dead}").write_text("half a file (atomic_path)")
    (tmp_path / f".report.json.tmp-{alive}").write_text("another build's file, in the writing")
    with run_lock(tmp_path):
        pass
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".build.lock"))
    assert left == [f".ptq.tmp-{alive}", f".report.json.tmp-{alive}", "finetune"]
    assert remove_leftovers(tmp_path) == []
