"""What INT8 buys the ViT hybrid (model.hybrid: vit), and whether its float ops should be integer too.

    .venv/bin/python benchmarks/vit_hybrid_int8.py --out benchmarks/results/vit_hybrid_int8_NAME

Three measurements on this CPU, ONNX Runtime (and OpenVINO where installed), batch 1, random-initialised
weights observed on random inputs (latency does not depend on the weights' values):

1. the whole hybrid (ResNeXt50-32x4d + ViT-tiny block, 224 px) FP32 vs INT8 (edgepipe's QDQ export), and
   the plain ResNeXt50 beside it: what the encoder costs and what INT8 buys end to end;
2. the encoder alone (layer 4's [2048, 7, 7] map in, 50 tokens, ViT-tiny width), FP32 vs INT8, with ORT's
   time per op type: the share LayerNorm, Softmax and GELU (float in the export) take;
3. the encoder with its Softmax in integer form (Q/DQ before it too, which ORT may fuse into QLinearSoftmax),
   against (2)'s float Softmax: keep it float unless this is faster.

Writes OUT.json (every number, the CPU) and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgepipe.bench.harness import measure
from edgepipe.bench.macs import count_macs
from edgepipe.bench.timing import environment
from edgepipe.models.build import build_model
from edgepipe.models.vit_hybrid import ViTEncoder
from edgepipe.quant.export import export_onnx
from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat, quant_stubs
from edgepipe.quant.qdq import to_qdq_module
from edgepipe.recipe import ModelConfig
from edgepipe.runtimes import get_runtime
from edgepipe.runtimes.onnxruntime import ort_op_account


def _observe(q: nn.Module, shape: list[int]) -> nn.Module:
    q.eval()
    with torch.no_grad():
        for _ in range(2):
            q(torch.randn(2, *shape))
    freeze_observers(q)
    freeze_bn_stats(q)
    return q.eval()


def _pair(float_model: nn.Module, quantizable: nn.Module, shape: list[int], out: Path, name: str):
    """FP32 and INT8 ONNX of one model: (fp32 path, int8 path)."""
    quantizable.load_state_dict(float_model.state_dict())
    prepare_qat(quantizable, example=torch.zeros(1, *shape))
    q = _observe(quantizable, shape)
    fp32, int8 = out / f"{name}_fp32.onnx", out / f"{name}_int8.onnx"
    export_onnx(float_model.eval(), fp32, shape, {}, 17)
    export_onnx(to_qdq_module(q), int8, shape, {}, 17, qdq=True, pad_channels=0)
    return fp32, int8


class _Encoder(nn.Module):
    """The encoder alone, its input quantized as layer 4's output is in the hybrid."""

    def __init__(self, quantized_softmax: bool = False, grid: int = 7):
        super().__init__()
        self.quant, self.dequant = quant_stubs()
        self.vit = ViTEncoder(2048, grid, 1, 192, 3, 4.0)
        if quantized_softmax:  # scores quantized too: DQ -> Softmax -> Q, ORT's QLinearSoftmax pattern
            for block in self.vit.blocks:
                block.attn.softmax = nn.Sequential(quant_stubs()[0], block.attn.softmax)

    def forward(self, x):
        return self.dequant(self.vit(self.quant(x)))

    def fuse_model(self, is_qat=None):
        self.vit.fuse_model(is_qat)


def _latency(path: Path, runtime: str, shape: list[int], threads: int, seconds: float) -> dict:
    _, timings, _ = measure(lambda: get_runtime(runtime, path, threads=threads), shape, [1], warmup=10,
                            min_iters=30, min_seconds=seconds, keep_samples=False)
    t = timings[1]
    return {"p50_ms": t["p50_ms"], "mean_ms": t["mean_ms"], "iters": t["iters"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="result path without suffix")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per model")
    args = ap.parse_args()
    torch.manual_seed(0)
    runtimes = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        runtimes.append("openvino")
    except ImportError:
        pass
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="vit-hybrid-") as tmp:
        out = Path(tmp)
        full = [3, 224, 224]
        for name, extra in (("resnext50", {}), ("resnext50_vit", {"hybrid": "vit"})):
            cfg = ModelConfig(arch="resnext50_32x4d", pretrained="none", dropout=0.0, **extra)
            f, _ = build_model(cfg, 10, image_size=224)
            q, _ = build_model(cfg, 10, quantizable=True, image_size=224)
            paths = _pair(f, q, full, out, name)
            results[name] = {"input": full, "gmacs": count_macs(paths[0])["gmacs"]}
            for prec, path in zip(("fp32", "int8"), paths, strict=True):
                for rt in runtimes:
                    results[name][f"{rt}_{prec}"] = _latency(path, rt, full, args.threads, args.seconds)
        enc = [2048, 7, 7]
        for name, qsoft in (("encoder", False), ("encoder_int8_softmax", True)):
            f, q = _Encoder(), _Encoder(quantized_softmax=qsoft)
            paths = _pair(f, q, enc, out, name)
            macs = count_macs(paths[1])
            entry = {"input": enc, "gmacs": macs["gmacs"], "macs_by_op_type": macs["by_op_type"],
                     "int8_mac_share": macs["int8_mac_share"]}
            for prec, path in zip(("fp32", "int8"), paths, strict=True):
                for rt in runtimes:
                    entry[f"{rt}_{prec}"] = _latency(path, rt, enc, args.threads, args.seconds)
                sample = np.random.default_rng(0).standard_normal((1, *enc)).astype(np.float32)
                account = ort_op_account(path, args.threads, sample, runs=200)
                entry[f"ort_ops_{prec}"] = {k: account[k] for k in
                                            ("optimized_op_counts", "time_share_by_op_type",
                                             "time_share_by_kind")}
            results[name] = entry
    doc = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "environment": environment(), "threads": args.threads, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(doc, runtimes) + "\n")
    print(_markdown(doc, runtimes))


def _markdown(doc: dict, runtimes: list[str]) -> str:
    env, res = doc["environment"], doc["results"]
    md = [f"# What INT8 buys the ViT hybrid ({env['cpu_model']}, {doc['threads']} threads)", "",
          f"CPU: {env['cpu_model']} (`{env['cpu_name']}`; {', '.join(env['isa_flags'])}). Written by "
          "`benchmarks/vit_hybrid_int8.py`; batch 1, p50 latency; random weights (timing only).", "",
          "| model | input | GMACs | runtime | FP32 p50 ms | INT8 p50 ms | INT8 speed-up |",
          "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        for rt in runtimes:
            a, b = r[f"{rt}_fp32"]["p50_ms"], r[f"{rt}_int8"]["p50_ms"]
            md.append(f"| {name} | {'x'.join(map(str, r['input']))} | {r['gmacs']:.3f} | {rt} | {a:.3f} "
                      f"| {b:.3f} | {a / b:.2f}x |")
    md += ["", "ONNX Runtime, INT8 encoder: share of op time by op type (float ops: LayerNormalization, "
           "Softmax, Gelu, Add, Mul):", "", "| graph | op type | share |", "|---|---|---|"]
    for name in ("encoder", "encoder_int8_softmax"):
        shares = res[name]["ort_ops_int8"]["time_share_by_op_type"]
        for op, s in list(shares.items())[:12]:
            md.append(f"| {name} | {op} | {100 * s:.1f}% |")
    return "\n".join(md)


if __name__ == "__main__":
    main()
