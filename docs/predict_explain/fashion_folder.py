"""Writes the folders of the worked example in docs/predict_explain.md: the first N Fashion-MNIST test images
as PNGs in an ImageFolder (one sub-folder per class) under OUT/good, and the same plus three broken files
(text named .png, a truncated PNG, an empty file) under OUT/mixed.

    .venv/bin/python docs/predict_explain/fashion_folder.py OUT [N]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(out: Path, n: int) -> None:
    from edgepipe.data.sources import open_source

    source = open_source("fashion-mnist", None)
    listing = source.listing()
    classes = [c.replace("/", "_") for c in listing.classes]
    good = out / "good"
    for ref, label in listing.samples["test"][:n]:
        folder = good / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        source.load(ref).save(folder / f"{ref.replace('/', '_')}.png")
    mixed = out / "mixed"
    shutil.copytree(good, mixed)
    first = next(iter(sorted((mixed / classes[0]).glob("*.png"))))
    (mixed / classes[0] / "broken_text.png").write_text("this is not an image\n")
    (mixed / classes[1] / "broken_truncated.png").write_bytes(first.read_bytes()[:100])
    (mixed / classes[2] / "broken_empty.png").write_bytes(b"")
    print(f"{n} test images in {good}; the same plus 3 broken files in {mixed}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300)
