"""SplitData over a written split: the one PTQ calibration sample (the ptq stage and benchmarks share it)."""

from __future__ import annotations

import json
import random

import numpy as np

from edgepipe.data.loaders import SplitData
from edgepipe.data.sources import open_source
from edgepipe.data.split import make_split
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import DataConfig
from tests.conftest import make_imagefolder


def _split_data(tmp_path, seed: int) -> SplitData:
    root = make_imagefolder(tmp_path / "photos", classes=3, per_class=10, size=16)
    listing = open_source(None, root).listing()
    split = make_split(listing, seed, 0.2, 0.2)
    doc = {"source": {"dataset": None, "root": str(root)}, "classes": listing.classes,
           **{part: [list(s) for s in samples] for part, samples in split.items()}}  # fmt: skip
    (tmp_path / "split.json").write_text(json.dumps(doc))
    cfg = DataConfig(root=root, image_size=16, crop_pct=1.0)
    return SplitData(tmp_path / "split.json", cfg, Preprocessing.make(16), seed)


def test_calibration_is_a_seeded_sorted_sample_of_train_images_eval_preprocessed(tmp_path):
    data = _split_data(tmp_path, seed=3)
    n_train = len(data.split["train"])
    idx, x = data.calibration(5)
    assert idx == sorted(random.Random(3).sample(range(n_train), 5)) == data.calibration(5)[0]
    train = data.dataset("train")  # image by image, as the ptq stage used to load them
    assert x.dtype == np.float32 and np.array_equal(x, np.stack([train[i][0].numpy() for i in idx]))
    all_idx, all_x = data.calibration(10_000)  # more than there are: every train image, once
    assert all_idx == list(range(n_train)) and len(all_x) == n_train
