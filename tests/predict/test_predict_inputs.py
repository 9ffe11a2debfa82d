"""What predict reads, in order: folders walked sorted, lists read relative to themselves, nothing dropped."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from edgepipe.errors import DataError
from edgepipe.predict.decode import ordered_map
from edgepipe.predict.inputs import expand_inputs


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folders_are_walked_recursively_in_sorted_order_and_skip_hidden_and_non_images(tmp_path):
    for rel in ["b/2.png", "b/10.png", "a/z.JPG", "a/sub/y.png", ".hidden/h.png", "a/.h.png", "a/notes.md"]:
        _touch(tmp_path / "d" / rel)
    items = expand_inputs([tmp_path / "d"])
    rels = [Path(i.shown).relative_to(tmp_path / "d").as_posix() for i in items]
    assert rels == ["a/sub/y.png", "a/z.JPG", "b/10.png", "b/2.png"]
    assert all(i.error is None for i in items)


def test_arguments_keep_their_order_and_a_missing_path_is_an_input_with_its_error(tmp_path):
    one, two = _touch(tmp_path / "one.png"), _touch(tmp_path / "f" / "two.png")
    items = expand_inputs([two, tmp_path / "nope.png", one, tmp_path / "f"])
    want = [str(two), str(tmp_path / "nope.png"), str(one), str(tmp_path / "f/two.png")]
    assert [i.shown for i in items] == want
    assert [i.error for i in items] == [None, "file not found", None, None]


def test_a_text_list_is_read_in_order_relative_to_its_folder(tmp_path):
    _touch(tmp_path / "lists" / "imgs" / "a.png")
    b = _touch(tmp_path / "elsewhere" / "b.png")
    _touch(tmp_path / "lists" / "dir" / "c.png")
    lst = tmp_path / "lists" / "batch.txt"
    lst.write_text(f"# a comment\nimgs/a.png\n\n{b}\nmissing.png\ndir\n")
    items = expand_inputs([lst])
    assert [i.shown for i in items] == ["imgs/a.png", str(b), "missing.png", "dir/c.png"]
    assert items[0].path == tmp_path / "lists" / "imgs" / "a.png"
    assert items[2].error == "file not found"


def test_nothing_to_read_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        expand_inputs([tmp_path / "empty"])


@pytest.mark.parametrize("workers", [0, 3])
def test_ordered_map_keeps_input_order_and_bounds_the_window(workers):
    rng = random.Random(0)
    delays = [rng.random() * 0.004 for _ in range(40)]
    running, peak = [0], [0]

    def slow(i: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        time.sleep(delays[i])
        running[0] -= 1
        return i

    started = []

    def lazy():
        for i in range(40):
            started.append(i)
            yield i

    out = []
    for r in ordered_map(slow, lazy(), workers=workers, window=5):
        out.append(r)
        assert len(started) - len(out) <= 5  # never more than the window taken ahead of the consumer
    assert out == list(range(40))
