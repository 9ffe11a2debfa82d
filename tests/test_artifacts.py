import json

import pytest

from edgepipe.artifacts import atomic_path, atomic_write_json, hash_json, read_manifest, staging_dir


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
