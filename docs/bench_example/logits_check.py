"""Logit-level check for docs/bench_example: FP32 ONNX on ORT and OpenVINO vs the torch.export program.

Top-1 agreement on random-weight models is weak evidence (few distinct predictions), so this compares the
logits themselves on the same photos with the same preprocessing. Not part of the CLI.

usage: python docs/bench_example/logits_check.py /tmp/bench_example
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgepipe.bench.accuracy import Images, PreprocessingFlags, open_data, predict, resolve_preprocessing
from edgepipe.bench.loading import build_runtime, load_model
from edgepipe.train.metrics import agreement


def main(root: Path) -> None:
    images = Images(open_data(str(root / "photos")))
    for arch in ("resnet18", "mobilenet_v2"):
        out = {}
        for file, rt in (
            (f"{arch}.pt2", "torch"),
            (f"{arch}.onnx", "onnxruntime"),
            (f"{arch}.onnx", "openvino"),
        ):
            model = load_model(root / file, file, root)
            pre, _ = resolve_preprocessing(model, PreprocessingFlags(image_size=224), need=True)
            out[rt] = predict(build_runtime(model, rt, 1, "f32", "LATENCY"), images, pre, 16, False)
        ref = out["torch"]
        print(f"{arch}: torch logits span {ref.min():.3g} .. {ref.max():.3g} on {len(ref)} images")
        for rt in ("onnxruntime", "openvino"):
            diff = float(np.abs(out[rt] - ref).max())
            agree = agreement(out[rt].argmax(1), ref.argmax(1))
            print(f"  {rt}: max |logit - torch| {diff:.2e}, top-1 equal on {100 * agree:.0f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
