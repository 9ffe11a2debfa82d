import gzip
import struct

import numpy as np
import pytest

from edgepipe.data.sources import FashionMNIST, ImageFolder
from edgepipe.errors import DataError


def test_imagefolder_skips_and_lists_unreadable_files(imagefolder):
    (imagefolder / "class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    listing = ImageFolder(imagefolder).listing()
    assert listing.classes == ["class_0", "class_1", "class_2"]
    assert len(listing.samples["all"]) == 60
    assert [s["file"] for s in listing.skipped] == ["class_0/broken.jpg"]


def test_missing_dataset_folder_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found") as exc:
        ImageFolder(tmp_path / "missing")
    assert "\n" not in str(exc.value)


def test_single_class_folder_is_rejected(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="at least two"):
        ImageFolder(tmp_path).listing()


def test_image_deleted_after_listing_gives_clear_error(imagefolder):
    src = ImageFolder(imagefolder)
    ref = src.listing().samples["all"][0][0]
    (imagefolder / ref).unlink()
    with pytest.raises(DataError, match="cannot read image"):
        src.load(ref)


def _idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 12), ("t10k", 4)):
        _idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("EDGEPIPE_FASHION_MNIST", str(tmp_path))
    src = FashionMNIST(cache_dir=tmp_path / "cache")
    listing = src.listing()
    assert len(listing.samples["train"]) == 12 and len(listing.samples["test"]) == 4
    assert listing.samples["test"][3] == ("test/3", 3)
    img = src.load("train/5")
    assert img.size == (28, 28) and img.mode == "RGB"
