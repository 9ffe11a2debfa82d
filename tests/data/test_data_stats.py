"""Dataset statistics written by the split stage (edgepipe.data.stats)."""

import json
import shutil

import pytest

from edgepipe.data import stats as stats_mod
from edgepipe.data.sources import ImageFolder, Listing
from edgepipe.data.split import make_split
from edgepipe.data.stats import dataset_stats, find_duplicates
from edgepipe.pipeline import build
from edgepipe.recipe import parse_recipe
from tests.conftest import make_imagefolder, tiny_recipe


@pytest.fixture
def messy(tmp_path):
    """class_0: 10 images + a broken file; class_1: 10 + a copy of a class_0 image; class_2: 3 images."""
    root = make_imagefolder(tmp_path / "photos", classes=2, per_class=10, size=32)
    make_imagefolder(tmp_path / "small", classes=3, per_class=3, size=32, seed=1)
    shutil.move(tmp_path / "small" / "class_2", root / "class_2")
    (root / "class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    shutil.copy(root / "class_0" / "img_000.png", root / "class_1" / "copy_of_0.png")
    shutil.copy(root / "class_2" / "img_000.png", root / "class_2" / "again.png")
    return root


def test_stats_summarise_class_sizes_and_find_tiny_classes_duplicates_and_unreadable_files(messy):
    listing = ImageFolder(messy).listing()
    split = make_split(listing, seed=0, val_fraction=0.2, test_fraction=0.2)
    s = dataset_stats(listing, split, messy)
    assert s["images_per_class"] == {"class_0": 10, "class_1": 11, "class_2": 4}
    assert s["summary"] == pytest.approx(
        {"mean": 25 / 3, "std": 3.0912061651652345, "min": 4, "max": 11, "median": 10.0, "imbalance": 2.75}
    )
    assert s["tiny_classes"] == {"class_2": 4} and s["empty_classes"] == []
    assert [u["file"] for u in s["unreadable_files"]] == ["class_0/broken.jpg"]
    dups = {tuple(d["files"]): d for d in s["duplicates"]}
    assert set(dups) == {
        ("class_0/img_000.png", "class_1/copy_of_0.png"),
        ("class_2/again.png", "class_2/img_000.png"),
    }
    assert dups[("class_0/img_000.png", "class_1/copy_of_0.png")]["classes"] == ["class_0", "class_1"]
    parts = [p for d in s["duplicates"] for p in d["parts"]]
    assert set(parts) <= {"train", "val", "test"} and parts
    assert sum(s["split_per_class"][p]["class_1"] for p in ("train", "val", "test")) == 11


def test_only_files_that_share_a_size_are_hashed(tmp_path, monkeypatch):
    for name, data in {"a": b"x" * 10, "b": b"y" * 10, "c": b"x" * 10, "d": b"z" * 20}.items():
        (tmp_path / name).write_bytes(data)
    hashed = []
    digest = stats_mod._file_digest
    monkeypatch.setattr(stats_mod, "_file_digest", lambda p: hashed.append(p.name) or digest(p))
    assert find_duplicates(tmp_path, ["a", "b", "c", "d"]) == [["a", "c"]]
    assert sorted(hashed) == ["a", "b", "c"]


def test_built_in_datasets_are_not_checked_for_duplicates():
    listing = Listing(["x", "y"], {"train": [("train/0", 0), ("train/1", 1)], "test": [("test/0", 0)]})
    s = dataset_stats(
        listing, {"train": listing.samples["train"], "val": [], "test": listing.samples["test"]}
    )
    assert s["duplicates"] is None and s["images_per_class"] == {"x": 2, "y": 1}
    assert s["tiny_classes"] == {"x": 2, "y": 1}


def test_split_stage_writes_statistics_plot_and_manifest_entries_and_warns(messy, tmp_path, caplog):
    recipe = parse_recipe(tiny_recipe(messy, stages=[]))
    build(recipe, tmp_path / "out")
    stage = tmp_path / "out" / recipe.name / "split"
    assert (stage / "class_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = json.loads((stage / "stats.json").read_text())
    entry = json.loads((stage / "manifest.json").read_text())["metrics"]["stats"]
    assert entry["images_per_class"] == full["images_per_class"] and entry["summary"]["min"] == 4
    assert entry["tiny_classes"] == {"class_2": 4}
    assert entry["unreadable_count"] == 1 and entry["unreadable_files"][0]["file"] == "class_0/broken.jpg"
    assert entry["duplicates"]["groups"] == 2 and entry["duplicates"]["across_classes"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("fewer than 5 images: class_2 (4)" in w for w in warnings)
    assert any("2 group(s) of identical files (1 across classes" in w for w in warnings)
    assert any("1 unreadable image(s) skipped: class_0/broken.jpg" in w for w in warnings)
