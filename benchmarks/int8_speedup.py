"""Is our INT8 really faster? FP32 vs QAT INT8 vs naive QAT export vs ONNX Runtime PTQ, on ORT and OpenVINO.

One run on one machine, same threads, models timed in alternating rounds so that drift (other load,
frequency changes) hits all of them alike. Uses a finished run's checkpoints (default: the README's main job),
re-exported at the model's own input size and at 224 px (the size the brief's 3.7x-slower measurement used).

    .venv/bin/python benchmarks/int8_speedup.py [--run artifacts/mnv3_qat] [--sizes 64 224]

Writes benchmarks/results/int8_speedup.json and benchmarks/results/int8_speedup.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.harness import model_size_mb
from edgepipe.bench.timing import environment
from edgepipe.data.loaders import SplitData
from edgepipe.recipe import load_recipe

log = logging.getLogger("int8_speedup")
RESULTS = Path(__file__).parent / "results"


def export_all(run: Path, size: int, work: Path, calib: int, recipe) -> tuple[dict[str, Path], dict, dict]:
    """fp32, int8-qat (ours), int8-qat-naive (the QAT model through torch.onnx.export as is), int8-ptq."""
    import torch

    from edgepipe.models.build import load_qat_model, rebuild
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.quant.export import export_onnx, torchscript_export
    from edgepipe.quant.ort_ptq import ort_static_quantize
    from edgepipe.quant.qdq import to_qdq_module

    fp = torch.load(run / "finetune" / "model.pt", map_location="cpu", weights_only=False)
    q = torch.load(run / "qat" / "model.pt", map_location="cpu", weights_only=False)
    own = Preprocessing.from_dict(fp["preprocessing"])
    pre = Preprocessing.make(size, mean=own.mean, std=own.std)  # the same statistics at another size
    shape = [3, size, size]
    qat_model = load_qat_model(q)
    paths = {k: work / f"{k}_{size}.onnx" for k in ("fp32", "int8-qat", "int8-qat-naive", "int8-ptq")}
    meta = {"classes": fp["classes"], "preprocessing": pre.to_dict()}
    export_onnx(rebuild(fp).eval(), paths["fp32"], shape, meta, 17)
    export_onnx(to_qdq_module(qat_model), paths["int8-qat"], shape, meta, 17, qdq=True)
    torchscript_export(qat_model, torch.zeros(1, *shape), paths["int8-qat-naive"], 17)
    data = SplitData(run / "split" / "split.json", recipe.data, pre, recipe.seed)
    n_train = len(data.split["train"])
    idx = sorted(random.Random(recipe.seed).sample(range(n_train), min(calib, n_train)))
    ds = data.dataset("train")
    x_cal = np.stack([ds[i][0].numpy() for i in idx]).astype(np.float32)
    ort_static_quantize(paths["fp32"], paths["int8-ptq"], x_cal, "minmax", meta)
    # each exported model is checked against the torch model it came from (PTQ: the FP32 model it quantizes)
    torch_twin = {"fp32": rebuild(fp).eval(), "int8-qat": qat_model, "int8-qat-naive": qat_model}
    torch_twin["int8-ptq"] = torch_twin["fp32"]
    return paths, pre, torch_twin


def test_arrays(run: Path, pre, recipe, n: int) -> tuple[np.ndarray, np.ndarray]:
    data = SplitData(run / "split" / "split.json", recipe.data, pre, recipe.seed)
    ds = data.dataset("test")
    idx = sorted(random.Random(1).sample(range(len(ds)), min(n, len(ds))))
    xs, ys = zip(*(ds[i] for i in idx), strict=True)
    return np.stack([x.numpy() for x in xs]).astype(np.float32), np.array(ys)


def alternate_timing(runtimes: dict, sample: np.ndarray, rounds: int, iters: int, warmup: int) -> dict:
    """Round-robin: each round times ``iters`` calls of every model; percentiles over all rounds."""
    for rt in runtimes.values():
        for _ in range(warmup):
            rt.predict(sample)
    times: dict[str, list[float]] = {k: [] for k in runtimes}
    order = list(runtimes)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for k in order:
            rt = runtimes[k]
            for _ in range(iters):
                t0 = time.perf_counter()
                rt.predict(sample)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {
        k: {
            "p50_ms": float(np.percentile(v, 50)),
            "p90_ms": float(np.percentile(v, 90)),
            "mean_ms": float(np.mean(v)),
            "samples": len(v),
        }
        for k, v in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("artifacts/mnv3_qat"))
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mnv3_qat.yaml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default: the model's size and 224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument(
        "--test-images",
        type=int,
        default=0,
        help="test images for accuracy at the model's own size (0: the whole test split)",
    )
    ap.add_argument(
        "--other-size-images",
        type=int,
        default=500,
        help="test images at other sizes (the model was not trained there: agreement only)",
    )
    ap.add_argument("--calibration-images", type=int, default=512)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")
    import torch

    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.onnxruntime import ort_op_account
    from edgepipe.runtimes.openvino import ov_op_account
    from edgepipe.runtimes.predict import runtime_logits, torch_logits

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    own = recipe.data.image_size
    sizes = args.sizes or sorted({own, 224})
    results = {"environment": environment(), "threads": args.threads, "run": str(args.run), "sizes": {}}
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            log.info("size %d: exporting", size)
            paths, pre, twins = export_all(args.run, size, Path(work), args.calibration_images, recipe)
            n_test = (args.test_images or 10**9) if size == own else args.other_size_images
            x, y = test_arrays(args.run, pre, recipe, n_test)
            refs = {}
            for m in {id(t): t for t in twins.values()}.values():
                refs[id(m)] = torch_logits(m, x)
            rts, rows, failed = {}, {}, {}
            for model, path in paths.items():
                for runtime, opts in _runtimes(results["environment"], model):
                    key = f"{model}|{runtime}"
                    try:
                        rt = get_runtime(runtime.split("-")[0], path, threads=args.threads, **opts)
                        logits = runtime_logits(rt, x)
                    except Exception as exc:  # noqa: BLE001 - a model a runtime rejects is a result, not a crash
                        failed[key] = {
                            "model": model,
                            "runtime": runtime,
                            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                        }
                        log.warning("%s on %s fails: %s", model, runtime, failed[key]["error"])
                        continue
                    ref = refs[id(twins[model])]
                    rts[key] = rt
                    rows[key] = {
                        "model": model,
                        "runtime": runtime,
                        "size_mb": round(model_size_mb(path), 3),
                        "test_top1": 100.0 * float((logits.argmax(1) == y).mean()),
                        "agreement_with_torch": float((logits.argmax(1) == ref.argmax(1)).mean()),
                        "torch_reference": "QAT fake-quant" if "qat" in model else "FP32",
                    }
            for batch in args.batches:
                sample = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
                iters = 20 if batch == 1 else 3
                log.info("size %d batch %d: timing %d models x %d rounds", size, batch, len(rts), args.rounds)
                lat = alternate_timing(rts, sample, args.rounds, iters, warmup=5 if batch == 1 else 2)
                for key, t in lat.items():
                    rows[key][f"b{batch}"] = t
            for row in rows.values():
                base = rows[f"fp32|{row['runtime'].split('-')[0]}"]  # bf16 is compared with f32
                for batch in args.batches:
                    row[f"b{batch}"]["speedup_vs_fp32"] = (
                        base[f"b{batch}"]["p50_ms"] / row[f"b{batch}"]["p50_ms"]
                    )
            sample = np.zeros((1, 3, size, size), np.float32)
            accounts = {}
            for model in ("fp32", "int8-qat", "int8-ptq"):
                accounts[f"{model}|onnxruntime"] = _slim(
                    ort_op_account(paths[model], args.threads, sample, runs=30)
                )
                accounts[f"{model}|openvino"] = _slim(
                    ov_op_account(paths[model], "f32", args.threads, sample, runs=30)
                )
            classes = {m: op_class_profile(paths[m], args.threads, sample) for m in ("fp32", "int8-qat")}
            results["sizes"][str(size)] = {
                "test_images": len(y),
                "trained_size": size == own,
                "rows": list(rows.values()),
                "op_account": accounts,
                "ort_op_classes": classes,
                "failed": list(failed.values()),
            }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "int8_speedup.json", results)
    atomic_write_text(args.out / "int8_speedup.md", markdown(results, args.batches))
    print(markdown(results, args.batches))


def _runtimes(env: dict, model: str) -> list[tuple[str, dict]]:
    """ONNX Runtime; OpenVINO pinned to f32; OpenVINO bf16 as its own FP32 row, only where it is native."""
    out = [("onnxruntime", {}), ("openvino", {"precision": "f32"})]
    if model == "fp32" and {"avx512_bf16", "amx_bf16"} & set(env.get("isa_flags", [])):
        out.append(("openvino-bf16", {"precision": "bf16"}))
    return out


def op_class_profile(path: Path, threads: int, sample: np.ndarray, runs: int = 30) -> dict:
    """ONNX Runtime per-node profile grouped into op classes, with the MACs each class does and its GMAC/s:
    how far each class is from the compute bound (the FP32 and INT8 graphs do the same MACs per class)."""
    import os
    import re
    from collections import defaultdict

    import onnx
    import onnxruntime as ort

    from edgepipe.bench.macs import count_macs

    graph = onnx.load(str(path)).graph
    macs = count_macs(path)["by_node"]
    klass = {}
    for n in graph.node:
        if n.op_type in ("Conv", "Gemm"):
            w = next((i for i in graph.initializer if i.name == n.input[1]), None)
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kind = (
                "depthwise conv"
                if group > 1
                else (
                    "first conv" if w is not None and len(w.dims) == 4 and w.dims[1] == 3 else "conv 1x1/kxk"
                )
            )
            if n.op_type == "Gemm":
                kind = "classifier (Gemm)"
            for key in (n.name, *n.output):
                klass[key] = kind
    # the integer graph stores weights behind DequantizeLinear: classify by the DQ'd weight's shape instead
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Conv" and n.input[1] in dq:
            w = inits.get(dq[n.input[1]].input[0])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kind = (
                "depthwise conv"
                if group > 1
                else ("first conv" if w is not None and w.dims[1] == 3 else "conv 1x1/kxk")
            )
            for key in (n.name, *n.output):
                klass[key] = kind
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.enable_profiling = True
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(None, {"input": sample})
    prof = sess.end_profiling()
    events = json.loads(Path(prof).read_text())
    os.unlink(prof)
    per_node: dict[str, list[float]] = defaultdict(list)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            per_node[name].append(e["dur"])
            ops[name] = e["args"]["op_name"]
    out: dict[str, dict] = defaultdict(lambda: {"ms": 0.0, "gmacs": 0.0, "nodes": 0})
    for name, durs in per_node.items():
        base = re.sub(r"(_token_\d+|_nchwc)$", "", name)
        kind = klass.get(base) or klass.get(re.sub(r"_output_0$", "", base))
        if kind is None:
            op = ops[name]
            kind = {
                "QLinearMul": "HardSwish/SE multiply",
                "Mul": "HardSwish/SE multiply",
                "QLinearAdd": "adds (residual + HardSwish gate)",
                "Add": "adds (residual + HardSwish gate)",
                "HardSigmoid": "HardSwish/SE multiply",
            }.get(op, "other (pool, layout, Q/DQ)")
        row = out[kind]
        row["ms"] += float(np.median(durs[1:] if len(durs) > 1 else durs)) / 1e3
        row["nodes"] += 1
        mac = macs.get(base) or macs.get(re.sub(r"_output_0$", "", base)) or 0
        row["gmacs"] += mac / 1e9
    for row in out.values():
        row["gmac_per_s"] = row["gmacs"] / (row["ms"] / 1e3) if row["ms"] and row["gmacs"] else None
    return dict(out)


def _slim(account: dict) -> dict:
    keep = (
        "optimized_op_counts",
        "precision_counts",
        "time_share_by_kind",
        "int8_time_share",
        "time_by_op_type_us",
        "time_by_type_us",
        "runs",
    )
    return {k: v for k, v in account.items() if k in keep}


def targets(block: dict) -> list[str]:
    """The issue's targets, checked on the model's own size at batch 1."""
    rows = {f"{r['model']}|{r['runtime']}": r for r in block["rows"]}
    out = []
    for rt in ("onnxruntime", "openvino"):
        q = rows.get(f"int8-qat|{rt}")
        if q is None or "b1" not in q:
            continue
        sp = q["b1"]["speedup_vs_fp32"]
        out.append(
            f"- INT8 at batch 1 at least 2.0x faster than FP32 on {rt}: {sp:.2f}x "
            f"-> {'met' if sp >= 2.0 else 'NOT met'}"
        )
    for rt in ("onnxruntime", "openvino"):
        f, q, p = (rows.get(f"{m}|{rt}") for m in ("fp32", "int8-qat", "int8-ptq"))
        if f and q and p:
            ok = q["test_top1"] >= f["test_top1"] - 0.3 and q["test_top1"] >= p["test_top1"]
            out.append(
                f"- INT8 top-1 within 0.3 points of FP32 and at least PTQ's on {rt}: "
                f"{q['test_top1']:.2f}% vs FP32 {f['test_top1']:.2f}%, PTQ {p['test_top1']:.2f}% "
                f"-> {'met' if ok else 'NOT met'}"
            )
        if q:
            a = q["agreement_with_torch"]
            out.append(
                f"- {rt} INT8 agrees with the torch fake-quant model on at least 99.5%: {100 * a:.2f}% "
                f"-> {'met' if a >= 0.995 else 'NOT met'}"
            )
    return out


def markdown(results: dict, batches: list[int]) -> str:
    env = results["environment"]
    bf16 = {"avx512_bf16", "amx_bf16"} & set(env["isa_flags"])
    out = [
        "# INT8 speed-up: FP32 vs INT8 on ONNX Runtime and OpenVINO",
        "",
        f"CPU: {env['cpu_model']}, {env['logical_cores']} logical cores, ISA: {', '.join(env['isa_flags'])}; "
        f"{results['threads']} threads; onnxruntime {env['packages']['onnxruntime']}, "
        f"openvino {env['packages']['openvino']}. Produced by `benchmarks/int8_speedup.py` "
        f"from the run `{results['run']}`; latency p50 over alternating rounds.",
        "",
        "OpenVINO rows use the `f32` precision hint for float layers. "
        + (
            "bf16 is native on this CPU and has its own row (`openvino-bf16`)."
            if bf16
            else "This CPU has no native bf16 (no avx512_bf16, no AMX), so there is no bf16 row."
        ),
        "",
    ]
    for size, block in results["sizes"].items():
        note = (
            ""
            if block.get("trained_size", True)
            else (
                ": the model was trained at another size, so top-1 here means little; the row is for latency"
            )
        )
        out += [f"## {size} x {size} px ({block['test_images']} test images{note})", ""]
        head = "| model | runtime | test top-1 % | agrees with torch | size MB |"
        sep = "|---|---|---|---|---|"
        for b in batches:
            head += f" p50 ms b{b} | speed-up b{b} |"
            sep += "---|---|"
        out += [head, sep]
        for r in block["rows"]:
            line = (
                f"| {r['model']} | {r['runtime']} | {r['test_top1']:.2f} | "
                f"{100 * r['agreement_with_torch']:.2f}% ({r['torch_reference']}) | {r['size_mb']:.2f} |"
            )
            for b in batches:
                line += f" {r[f'b{b}']['p50_ms']:.3f} | {r[f'b{b}']['speedup_vs_fp32']:.2f}x |"
            out.append(line)
        for f in block.get("failed", []):
            out.append(f"| {f['model']} | {f['runtime']} | fails to load: {f['error']} |")
        out.append("")
        if block.get("trained_size", True):
            out += ["Targets (batch 1, this size):", "", *targets(block), ""]
        cls = block["ort_op_classes"]
        out += [
            "ONNX Runtime time by op class (batch 1, per-node profile; GMAC/s = MACs done / time):",
            "",
            "| op class | FP32 ms | FP32 GMAC/s | INT8 ms | INT8 GMAC/s | INT8/FP32 time |",
            "|---|---|---|---|---|---|",
        ]
        for kind in sorted(
            set(cls["fp32"]) | set(cls["int8-qat"]), key=lambda k: -cls["fp32"].get(k, {"ms": 0})["ms"]
        ):
            f, q = cls["fp32"].get(kind, {"ms": 0.0}), cls["int8-qat"].get(kind, {"ms": 0.0})
            ratio = f"{q['ms'] / f['ms']:.2f}" if f["ms"] else "–"
            fg = f"{f['gmac_per_s']:.1f}" if f.get("gmac_per_s") else "–"
            qg = f"{q['gmac_per_s']:.1f}" if q.get("gmac_per_s") else "–"
            out.append(f"| {kind} | {f['ms']:.3f} | {fg} | {q['ms']:.3f} | {qg} | {ratio} |")
        out.append("")
        acc = block["op_account"]
        ov_f = acc.get("fp32|openvino", {}).get("time_by_type_us", {})
        ov_q = acc.get("int8-qat|openvino", {}).get("time_by_type_us", {})
        if ov_f and ov_q:
            nf, nq = acc["fp32|openvino"].get("runs", 1), acc["int8-qat|openvino"].get("runs", 1)
            out += [
                "OpenVINO time by layer type (batch 1, per-layer counters, ms per inference):",
                "",
                "| layer type | FP32 ms | INT8 ms | INT8/FP32 time |",
                "|---|---|---|---|",
            ]
            for t in sorted(set(ov_f) | set(ov_q), key=lambda k: -(ov_f.get(k, 0) + ov_q.get(k, 0))):
                a, b = ov_f.get(t, 0) / nf / 1e3, ov_q.get(t, 0) / nq / 1e3
                if a + b < 0.005:
                    continue
                out.append(f"| {t} | {a:.3f} | {b:.3f} | {f'{b / a:.2f}' if a else '–'} |")
            out.append("")
        out.append(
            "INT8 share of kernel time (per-op profiles, batch 1): "
            + ", ".join(f"{k}: {100 * v.get('int8_time_share', 0):.0f}%" for k, v in acc.items())
        )
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
