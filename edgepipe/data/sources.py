"""Where images come from: built-in datasets and user ImageFolders, behind one small interface.

A source lists samples as (ref, label) with ``ref`` a string that ``load(ref)`` turns into an RGB PIL image,
so a split can be written to disk as plain file lists / indices and read back by any later stage.
"""

from __future__ import annotations

import gzip
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgepipe.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

FASHION_MNIST_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]  # fmt: skip
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # Debian's dataset-fashion-mnist
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Listing:
    """All samples of a source, grouped by the source's own split (``all`` when it has none)."""

    classes: list[str]
    samples: dict[str, list[tuple[str, int]]]
    skipped: list[dict] = field(default_factory=list)


class Source(ABC):
    name: str

    @abstractmethod
    def listing(self) -> Listing: ...

    @abstractmethod
    def load(self, ref: str) -> Image.Image: ...

    @abstractmethod
    def fingerprint(self) -> dict: ...


def _read_idx(path: Path) -> np.ndarray:
    # IDX is a 4-byte magic (dtype, ndim) + big-endian dims + raw bytes; ten lines beat a dependency.
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for candidate in (d / stem, d / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


class FashionMNIST(Source):
    """Fashion-MNIST (10 classes, 60k train + 10k test, 28x28 grey) from local IDX files or a download."""

    name = "fashion-mnist"

    def __init__(self, cache_dir: Path | None = None):
        env = os.environ.get("EDGEPIPE_FASHION_MNIST")
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "edgepipe" / "fashion-mnist")
        self.dirs = [Path(p) for p in ([env] if env else [])] + [Path(p) for p in FASHION_MNIST_DIRS]
        self.dirs += [self.cache_dir / "FashionMNIST" / "raw"]

    def _files(self) -> dict[str, tuple[Path, Path]]:
        found = {
            k: (_find_idx(self.dirs, i), _find_idx(self.dirs, lab)) for k, (i, lab) in _FMNIST_FILES.items()
        }
        if all(p for pair in found.values() for p in pair):
            return found  # type: ignore[return-value]
        self._download()
        found = {
            k: (_find_idx(self.dirs, i), _find_idx(self.dirs, lab)) for k, (i, lab) in _FMNIST_FILES.items()
        }
        return found  # type: ignore[return-value]

    def _download(self) -> None:
        from torchvision.datasets import FashionMNIST as TVFashionMNIST

        log.info("Fashion-MNIST not found locally; trying torchvision's download into %s", self.cache_dir)
        try:
            for train in (True, False):
                TVFashionMNIST(str(self.cache_dir), train=train, download=True)
        except Exception as exc:  # noqa: BLE001 - any network failure means the same fix
            raise DataError(
                "built-in dataset fashion-mnist not found and could not be downloaded "
                f"({type(exc).__name__}); fix: `sudo apt-get install dataset-fashion-mnist` "
                "(files in /usr/share/datasets/fashion-mnist) or set EDGEPIPE_FASHION_MNIST to a folder "
                "holding the four IDX files"
            ) from None

    @cached_property
    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {k: (_read_idx(i), _read_idx(lab)) for k, (i, lab) in self._files().items()}

    def listing(self) -> Listing:
        samples = {
            split: [(f"{split}/{i}", int(y)) for i, y in enumerate(labels)]
            for split, (_, labels) in self._arrays.items()
        }
        return Listing(classes=list(FASHION_MNIST_CLASSES), samples=samples)

    def load(self, ref: str) -> Image.Image:
        split, idx = ref.split("/")
        return Image.fromarray(self._arrays[split][0][int(idx)], mode="L").convert("RGB")

    def fingerprint(self) -> dict:
        return {"dataset": self.name, "files": {k: [p.name for p in v] for k, v in self._files().items()}}


class ImageFolder(Source):
    """A folder with one sub-folder of images per class (torchvision's ImageFolder layout)."""

    name = "imagefolder"

    def __init__(self, root: Path, verify: bool = True):
        self.root = Path(root)
        self.verify = verify
        if not self.root.is_dir():
            raise DataError(
                f"dataset folder not found: {self.root}; fix: set data.root to a folder with one "
                "sub-folder of images per class"
            )

    @cached_property
    def _listing(self) -> Listing:
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if len(classes) < 2:
            raise DataError(
                f"{self.root} has {len(classes)} class folder(s); fix: put each class's images in its own "
                "sub-folder (at least two)"
            )
        samples: list[tuple[str, int]] = []
        skipped: list[dict] = []
        for label, cls in enumerate(classes):
            for path in sorted((self.root / cls).rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                rel = path.relative_to(self.root).as_posix()
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append({"file": rel, "reason": "not an image extension"})
                    continue
                if self.verify:
                    try:
                        with Image.open(path) as im:
                            im.verify()
                    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                        skipped.append({"file": rel, "reason": f"unreadable: {exc}"})
                        continue
                samples.append((rel, label))
        empty = [c for i, c in enumerate(classes) if not any(y == i for _, y in samples)]
        if empty:
            raise DataError(
                f"class folder(s) with no readable image: {', '.join(empty)} in {self.root}; "
                "fix: add images or remove the folder"
            )
        for s in skipped:
            log.warning("skipped %s (%s)", s["file"], s["reason"])
        return Listing(classes=classes, samples={"all": samples}, skipped=skipped)

    def listing(self) -> Listing:
        return self._listing

    def load(self, ref: str) -> Image.Image:
        path = self.root / ref
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"cannot read image {path} ({type(exc).__name__}); fix: restore or delete it, then rerun "
                "with --from finetune so the split is rebuilt"
            ) from None

    def fingerprint(self) -> dict:
        stats = [(ref, (self.root / ref).stat().st_size) for ref, _ in self._listing.samples["all"]]
        return {"root": str(self.root.resolve()), "classes": self._listing.classes, "files": stats}


BUILTINS = {"fashion-mnist": FashionMNIST}


def open_source(dataset: str | None, root: Path | None) -> Source:
    if root is not None:
        return ImageFolder(root)
    if dataset not in BUILTINS:
        raise DataError(
            f"unknown built-in dataset '{dataset}'; fix: use one of {sorted(BUILTINS)} or set data.root"
        )
    return BUILTINS[dataset]()
