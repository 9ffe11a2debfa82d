"""Why does INT8 disagree with the torch fake-quant model on some test images? Agreement, hop by hop.

The torch QAT model (eager fake-quant) is the reference. Each row is one more step towards what the integer
runtimes execute, run in ONNX Runtime with its graph optimisations off (Q/DQ then run in float, so a row
differs from the one above only by what that step changes), and finally with integer kernels:

1. the QDQ torch module export writes (BN folded, scalar fake-quant) — in torch;
2. its ONNX export, as is (float biases, Q/DQ on weights);
3. cleaned for integer kernels but with float biases kept;
4. cleaned, int32 biases (what export writes) — fusions off;
5. the same model with ONNX Runtime's fusions on (QLinearConv & co.);
6. the same model in OpenVINO (f32 hint for float layers).

    .venv/bin/python benchmarks/int8_agreement.py [--run artifacts/mnv3_qat]

Writes benchmarks/results/int8_agreement.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.timing import environment
from edgepipe.data.loaders import SplitData
from edgepipe.recipe import load_recipe

log = logging.getLogger("int8_agreement")
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("artifacts/mnv3_qat"))
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mnv3_qat.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")
    import onnx
    import torch

    from edgepipe.models.build import load_qat_model
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.quant.export import torchscript_export
    from edgepipe.quant.onnx_qdq import clean_qdq
    from edgepipe.quant.qdq import to_qdq_module
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits, torch_logits

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    q = torch.load(args.run / "qat" / "model.pt", map_location="cpu", weights_only=False)
    fp = torch.load(args.run / "finetune" / "model.pt", map_location="cpu", weights_only=False)
    pre = Preprocessing.from_dict(fp["preprocessing"])
    x, y = SplitData(args.run / "split" / "split.json", recipe.data, pre, recipe.seed).arrays("test")
    qat = load_qat_model(q)
    qdq = to_qdq_module(qat).eval()

    ref = torch_logits(qat, x)
    rows = [("QAT fake-quant model (torch, the reference)", ref)]
    rows.append(("1. QDQ torch module (BN folded, scalar fake-quant)", torch_logits(qdq, x)))
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "raw.onnx"
        torchscript_export(qdq, torch.zeros(1, *pre.input_size), raw, 17)
        variants = {
            "float_bias": Path(work) / "float_bias.onnx",
            "int32_bias": Path(work) / "int32_bias.onnx",
        }
        onnx.save(clean_qdq(onnx.load(str(raw)), int32_bias=False), str(variants["float_bias"]))
        onnx.save(clean_qdq(onnx.load(str(raw))), str(variants["int32_bias"]))
        steps = [
            (
                "2. ONNX export as is (float biases), ORT fusions off",
                raw,
                "onnxruntime",
                {"optimization": "disable"},
            ),
            (
                "3. cleaned, float biases kept, ORT fusions off",
                variants["float_bias"],
                "onnxruntime",
                {"optimization": "disable"},
            ),
            (
                "4. cleaned, int32 biases (the exported model), ORT fusions off",
                variants["int32_bias"],
                "onnxruntime",
                {"optimization": "disable"},
            ),
            ("5. the exported model, ORT integer kernels", variants["int32_bias"], "onnxruntime", {}),
            ("6. the exported model, OpenVINO", variants["int32_bias"], "openvino", {"precision": "f32"}),
        ]
        for label, path, runtime, opts in steps:
            log.info("%s", label)
            rt = get_runtime(runtime, path, threads=args.threads, **opts)
            rows.append((label, runtime_logits(rt, x)))
    table = []
    for label, logits in rows:
        table.append(
            {
                "step": label,
                "agreement_with_torch_qat": float((logits.argmax(1) == ref.argmax(1)).mean()),
                "test_top1": 100.0 * float((logits.argmax(1) == y).mean()),
                "mean_abs_logit_diff": float(np.abs(logits - ref).mean()),
            }
        )
    results = {"environment": environment(), "run": str(args.run), "test_images": len(y), "rows": table}
    md = [
        "# INT8 agreement with the torch fake-quant model, hop by hop",
        "",
        f"Produced by `benchmarks/int8_agreement.py` from the run `{args.run}` on {len(y)} test images; "
        f"onnxruntime {results['environment']['packages']['onnxruntime']}, "
        f"openvino {results['environment']['packages']['openvino']}.",
        "",
        "| step | agrees with torch QAT | test top-1 % | mean abs logit diff |",
        "|---|---|---|---|",
    ]
    for r in table:
        md.append(
            f"| {r['step']} | {100 * r['agreement_with_torch_qat']:.2f}% | {r['test_top1']:.2f} | "
            f"{r['mean_abs_logit_diff']:.4f} |"
        )
    md += [
        "",
        "Step 3 -> 4 is the int32 bias: the exported graph stores each bias as int32 at scale "
        "input_scale x weight_scale (what ONNX Runtime's QLinearConv/QGemm need), a rounding eager-mode "
        "QAT does not train with (its fake-quant keeps the bias in float). Each rounded bias shifts a "
        "whole channel by up to half an accumulator step, enough to move some activations across a "
        "rounding boundary; those one-step changes compound through the network. A quantizer that "
        "derives the bias scale from its input's (PT2E's DerivedQuantizationSpec) would train with it.",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "int8_agreement.json", results)
    atomic_write_text(args.out / "int8_agreement.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
