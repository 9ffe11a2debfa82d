"""Is `edgepipe predict` as fast as its runtime? Images/s of predict over a folder of image files against the
bare runtime on preloaded arrays, same model, runtime, threads and batch size; decoding timed on its own.

    .venv/bin/python benchmarks/predict_throughput.py [--model M.onnx] [--images 256] [--batch-size 32]
        [--threads 2] [--workers 2] [--format png] [--repeats 3]

Without --model it exports MobileNetV3-Large (random weights: speed does not depend on them) at 224x224 with
edgepipe's metadata. The images are synthetic photos (smooth gradients, shapes, mild noise) written as PNG or
JPEG at --photo-size, so decoding costs what a camera's file would. Target: predict >= 0.8x the bare runtime.

Writes benchmarks/results/predict_throughput_<cpu>.{json,md}, with the CPU model and ISA flags recorded.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.timing import cpu_name, environment

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.8


def _model(out: Path, size: int) -> Path:
    from edgepipe.models.build import build_model
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.quant.export import export_onnx
    from edgepipe.recipe import DataConfig, ModelConfig

    cfg = ModelConfig(arch="mobilenet_v3_large", pretrained="none")
    model, _ = build_model(cfg, 10)
    pre = Preprocessing.for_model(cfg.arch, DataConfig(dataset="fashion-mnist", image_size=size))
    meta = {"classes": [f"class_{i}" for i in range(10)], "preprocessing": pre.to_dict(), "arch": cfg.arch}
    export_onnx(model.eval(), out, list(pre.input_size), meta, 17)
    return out


def _photos(folder: Path, n: int, side: int, fmt: str) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        img = np.stack([a * xx + (255 - a) * yy, b * (1 - xx), c * yy], -1)
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.3)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.{fmt}"
        Image.fromarray(img).save(path, quality=90) if fmt == "jpg" else Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _bare(rt, x: np.ndarray, batch: int) -> float:
    """Images/s of the runtime alone on preloaded, preprocessed arrays (one warm-up batch first)."""
    rt.predict(x[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        rt.predict(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an edgepipe .onnx/.xml/model.pt (default: MobileNetV3-L)")
    ap.add_argument("--runtime", default=None, help="default: the model's own (as edgepipe predict)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--photo-size", type=int, default=320, help="side of the synthetic photos (pixels)")
    ap.add_argument("--image-size", type=int, default=224, help="model input, for the default model")
    ap.add_argument("--format", choices=("png", "jpg"), default="png")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from edgepipe.bench.loading import build_runtime, load_model, select_runtimes
    from edgepipe.predict import PredictOptions, predict
    from edgepipe.predict.decode import image_decoder, ordered_map
    from edgepipe.predict.inputs import expand_inputs

    with tempfile.TemporaryDirectory(prefix="edgepipe-predict-bench-") as tmp:
        tmp_dir = Path(tmp)
        model_path = args.model or _model(tmp_dir / "mobilenet_v3_large.onnx", args.image_size)
        photos = _photos(tmp_dir / "photos", args.images, args.photo_size, args.format)
        opts = PredictOptions(runtime=args.runtime, batch_size=args.batch_size, threads=args.threads,
                              workers=args.workers, top_k=5)  # fmt: skip
        m = load_model(model_path, model_path.name, tmp_dir)
        m.runtimes = select_runtimes(m, [args.runtime] if args.runtime else None, None)
        rt = build_runtime(m, m.runtimes[0], args.threads, opts.precision, opts.hint)
        decode = image_decoder(m.meta["preprocessing"])
        # decoding alone, on the same worker threads predict uses
        t0 = time.perf_counter()
        decoded = list(ordered_map(decode, expand_inputs(photos), args.workers, 4 * args.batch_size))
        decode_alone = time.perf_counter() - t0
        x = np.stack([d.array for d in decoded])  # type: ignore[misc]
        predict(model_path, [tmp_dir / "photos"], opts)  # warm-up: file cache, ORT's first-run allocations
        runs, bare = [], []
        for _ in range(args.repeats):  # alternating rounds: load on a shared machine hits both sides alike
            runs.append(predict(model_path, [tmp_dir / "photos"], opts))
            bare.append(_bare(rt, x, args.batch_size))

    ips = statistics.median(r.timing["images_per_s"] for r in runs)
    bare_ips = statistics.median(bare)
    timing = sorted(runs, key=lambda r: r.timing["images_per_s"])[len(runs) // 2].timing
    ratios = [r.timing["images_per_s"] / b for r, b in zip(runs, bare, strict=True)]
    doc = {
        "schema": "edgepipe.predict_throughput/1",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": str(args.model or f"mobilenet_v3_large (random weights) at {args.image_size}"),
        "runtime": runs[0].runtime,
        "settings": {k: getattr(args, k) for k in ("images", "photo_size", "format", "batch_size", "threads",
                                                   "workers", "repeats")},  # fmt: skip
        "predict_images_per_s": round(ips, 2),
        "predict_runs_images_per_s": [round(r.timing["images_per_s"], 2) for r in runs],
        "bare_runtime_images_per_s": round(bare_ips, 2),
        "bare_runs_images_per_s": [round(b, 2) for b in bare],
        "ratio": round(ips / bare_ips, 3),
        "round_ratios": [round(q, 3) for q in ratios],  # each predict run over the bare run right after it
        "target_ratio": TARGET,
        "met": ips / bare_ips >= TARGET,
        "decode_alone_images_per_s": round(len(photos) / decode_alone, 2),
        "predict_median_run": timing,
        "environment": environment(),
    }
    name = f"predict_throughput_{cpu_name()}"
    atomic_write_json(args.results / f"{name}.json", doc)
    env = doc["environment"]
    met = "met" if doc["met"] else "NOT met"
    md = "\n".join([
        f"# edgepipe predict vs the bare runtime ({env['cpu_model']}, {doc['finished']})",
        "",
        f"Model {doc['model']} on {doc['runtime']['runtime']}, batch {args.batch_size}, "
        f"{args.threads} runtime threads, {args.workers} decode workers; {args.images} "
        f"{args.format.upper()} photos of {args.photo_size}x{args.photo_size}; medians of {args.repeats} "
        "alternating rounds (a predict run, then a bare run)",
        "",
        "| measure | images/s |",
        "| --- | ---: |",
        f"| `edgepipe predict` over the folder (decode, preprocess, infer) | {doc['predict_images_per_s']} |",
        f"| bare runtime on preloaded arrays | {doc['bare_runtime_images_per_s']} |",
        f"| decode + preprocess alone, {args.workers} workers | {doc['decode_alone_images_per_s']} |",
        "",
        f"Ratio predict / bare: **{doc['ratio']}** (target >= {TARGET}: {met}); per round: "
        f"{', '.join(str(q) for q in doc['round_ratios'])}.",
        f"In the median predict run: decode {timing['decode_s']} s summed over workers, the runtime waited "
        f"{timing['decode_wait_s']} s for decoded images, batch normalisation {timing['normalize_s']} s, "
        f"inference {timing['infer_s']} s, wall {timing['wall_s']} s.",
        "",
        f"CPU flags: {', '.join(env['isa_flags']) or 'none of note'}; {env['logical_cores']} logical cores.",
        "",
    ])  # fmt: skip
    atomic_write_text(args.results / f"{name}.md", md)
    print(md)


if __name__ == "__main__":
    main()
