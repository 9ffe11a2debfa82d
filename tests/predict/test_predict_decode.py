"""predict's decoding: uint8 crops in workers, then one batch normalisation, bit-identical to eval_transform
(what `edgepipe bench` and every stage feed the model), for any image mode, shape and batch split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgepipe.data.transforms import eval_transform
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.predict.decode import BatchNormalizer, image_decoder, image_loader
from edgepipe.predict.inputs import Input

PRE = Preprocessing.make(32, resize=36, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).to_dict()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    kinds = [("RGB", (50, 40)), ("L", (36, 36)), ("RGBA", (20, 70)), ("RGB", (16, 16)), ("LA", (64, 48))]
    for i, (mode, size) in enumerate(kinds):
        arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
        img = Image.fromarray(arr, "RGBA").convert(mode)
        path = tmp_path / f"img_{i}.png"
        img.save(path)
        out.append(path)
    return out


def test_loader_then_batch_normalizer_equals_eval_transform_bit_for_bit(images):
    tf = eval_transform(Preprocessing.from_dict(PRE))
    want = np.stack([tf(Image.open(p).convert("RGB")).numpy() for p in images])
    load, normalize = image_loader(PRE), BatchNormalizer(PRE)
    crops = [load(Input(str(p), p)).array for p in images]
    assert all(c.dtype == np.uint8 and c.shape == (3, 32, 32) for c in crops)
    first = normalize(crops[:3]).copy()  # the buffer is reused: a smaller batch after a larger one
    second = normalize(crops[3:])
    np.testing.assert_array_equal(np.concatenate([first, second]), want)
    np.testing.assert_array_equal(normalize(crops, reuse=False), want)
    decode = image_decoder(PRE)
    np.testing.assert_array_equal(np.stack([decode(Input(str(p), p)).array for p in images]), want)


def test_unreadable_files_become_errors_not_exceptions(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    d = image_loader(PRE)(Input(str(bad), bad))
    assert d.array is None and d.error.startswith("unreadable image (UnidentifiedImageError")
    gone = Input("gone.png", tmp_path / "gone.png", "file not found")
    assert image_decoder(PRE)(gone).error == "file not found"
