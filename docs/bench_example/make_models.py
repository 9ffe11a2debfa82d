"""Build the models and photos for docs/bench_example (README.md, "Benchmark any model", has the commands).

torchvision resnet18 and mobilenet_v2 with random weights (weights=None: no download), at 224x224:
  <arch>.onnx       FP32, torch.onnx.export, dynamic batch, no edgepipe metadata (a "foreign" model)
  <arch>_int8.onnx  ONNX Runtime quantize_static, QDQ, per-channel INT8 weights, calibrated on the photos
  <arch>.pt2        torch.export program of the same weights (the torch reference)
plus photos/: a generated ImageFolder (5 classes x 10 images). Prints thop's MAC count of each float model.

usage: python docs/bench_example/make_models.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from edgepipe.bench.accuracy import Images, PreprocessingFlags, open_data, resolve_preprocessing
from edgepipe.bench.loading import load_model
from edgepipe.bench.macs import thop_macs
from tests.conftest import make_imagefolder


class Photos(CalibrationDataReader):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it = iter({"input": b} for b in batches)

    def get_next(self):
        return next(self._it, None)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    photos = make_imagefolder(out / "photos", classes=5, per_class=10, size=256, seed=0)
    for arch in ("resnet18", "mobilenet_v2"):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        x = torch.zeros(1, 3, 224, 224)
        fp32 = out / f"{arch}.onnx"
        torch.onnx.export(
            model, (x,), str(fp32), dynamo=False, opset_version=17, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(model, (torch.zeros(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(out / f"{arch}.pt2"))
        # Calibrate on the photos with the preprocessing bench will use (--image-size 224, ImageNet mean/std).
        bm = load_model(fp32, fp32.name, out)
        pre, _ = resolve_preprocessing(bm, PreprocessingFlags(image_size=224), need=True)
        calib = list(Images(open_data(str(photos), limit=16)).batches(pre, 1))
        quantize_static(
            str(fp32), str(out / f"{arch}_int8.onnx"), Photos(calib), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        print(f"{arch}: thop {thop_macs(model, (1, 3, 224, 224)) / 1e9:.4f} GMACs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
