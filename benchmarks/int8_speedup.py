"""Is our INT8 really faster than the best float? FP32 (f32 and the CPU's native low-precision float) vs our
QAT INT8 vs the naive QAT export vs ONNX Runtime's and NNCF's PTQ, on ONNX Runtime and OpenVINO.

One run on one machine, same threads, models timed in alternating rounds (order shuffled per round) so drift
(other load, frequency changes) hits all of them alike; latency is the median over all rounds, with the
spread of the per-round medians beside it. Each runtime's float baseline is its fastest native float mode on
this CPU (ONNX Runtime: f32; OpenVINO: f32, and bf16/f16 where the CPU has them), each its own row, and every
speed-up names the baseline it divides by. OpenVINO runs the IR (what export ships) for FP32, our INT8 and
NNCF's INT8, loaded as our loaders load it (precision 'auto': f32 for float, the plugin default for INT8),
plus our INT8 with the f32 hint. Uses a finished run's checkpoints (default: the README's main job),
re-exported at the model's own input size and at 224 px.

    .venv/bin/python benchmarks/int8_speedup.py [--run artifacts/mnv3_qat] [--sizes 64 224]
    .venv/bin/python benchmarks/int8_speedup.py --run artifacts/lite0_fashion \
        --recipe recipes/efficientnet_lite0_fashion.yaml --tag efficientnet-lite0

Writes benchmarks/results/int8_speedup_<cpu>.json and .md, <cpu> as bench.timing.cpu_name() names it
(e.g. amd-epyc-zen5), so results from every CPU sit side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.harness import alternating_rounds, model_size_mb, paired_ratio, round_medians
from edgepipe.bench.timing import environment
from edgepipe.data.loaders import SplitData
from edgepipe.recipe import load_recipe

log = logging.getLogger("int8_speedup")
RESULTS = Path(__file__).parent / "results"
MODELS = (
    "fp32", "int8-qat", "int8-qat-nopad", "int8-qat-mixed", "int8-qat-ov", "int8-qat-naive", "int8-ptq-ort",
    "int8-ptq-nncf",
)  # fmt: skip


def export_all(
    run: Path, size: int, work: Path, calib: int, recipe
) -> tuple[dict[str, dict[str, Path]], dict, dict, dict]:
    """Per model, the file each runtime loads: fp32 and int8-qat as export ships them (ONNX for ONNX Runtime,
    IR for OpenVINO: the ONNX with depthwise widths padded for ONNX Runtime, the IR from the unpadded
    export), int8-qat-nopad (the ONNX without that padding, export.pad_channels: 0; ONNX Runtime only),
    int8-qat-ov (the same QAT model with OpenVINO's Q/DQ placement, export.openvino_qdq: openvino; OpenVINO
    only), int8-qat-mixed (our ONNX with the convolutions measured faster in float on
    this CPU kept in float, export.float_layers: auto; ONNX Runtime only), the naive export and ORT's PTQ as
    ONNX for both, NNCF's PTQ from each backend. The layer profile behind int8-qat-mixed is returned too.
    Returns (paths, preprocessing, torch twins, models that could not be built -> reason)."""
    import torch

    from edgepipe.models.build import load_qat_model, rebuild
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.quant.export import export_onnx, torchscript_export
    from edgepipe.quant.ort_ptq import ort_static_quantize
    from edgepipe.quant.qdq import to_qdq_module
    from edgepipe.runtimes.openvino import convert_to_ir

    fp = torch.load(run / "finetune" / "model.pt", map_location="cpu", weights_only=False)
    q = torch.load(run / "qat" / "model.pt", map_location="cpu", weights_only=False)
    own = Preprocessing.from_dict(fp["preprocessing"])
    pre = Preprocessing.make(size, mean=own.mean, std=own.std)  # the same statistics at another size
    shape = [3, size, size]
    qat_model = load_qat_model(q)
    onnx = {k: work / f"{k}_{size}.onnx" for k in MODELS}
    meta = {"classes": fp["classes"], "preprocessing": pre.to_dict()}
    export_onnx(rebuild(fp).eval(), onnx["fp32"], shape, meta, 17)
    export_onnx(to_qdq_module(qat_model), onnx["int8-qat"], shape, meta, 17, qdq=True)
    export_onnx(to_qdq_module(qat_model), onnx["int8-qat-nopad"], shape, meta, 17, qdq=True, pad_channels=0)
    export_onnx(to_qdq_module(qat_model), onnx["int8-qat-ov"], shape, meta, 17, qdq=True, target="openvino")
    torchscript_export(qat_model, torch.zeros(1, *shape), onnx["int8-qat-naive"], 17)
    data = SplitData(run / "split" / "split.json", recipe.data, pre, recipe.seed)
    n_train = len(data.split["train"])
    idx = sorted(random.Random(recipe.seed).sample(range(n_train), min(calib, n_train)))
    ds = data.dataset("train")
    x_cal = np.stack([ds[i][0].numpy() for i in idx]).astype(np.float32)
    ort_static_quantize(onnx["fp32"], onnx["int8-ptq-ort"], x_cal, "minmax", meta)
    paths = {m: {"onnxruntime": onnx[m], "openvino": onnx[m]} for m in MODELS}
    for m, src in (("fp32", "fp32"), ("int8-qat", "int8-qat-nopad"), ("int8-qat-ov", "int8-qat-ov")):
        paths[m]["openvino"] = convert_to_ir(onnx[src], onnx[m].with_suffix(".xml"))  # as export ships it
    del paths["int8-qat-ov"]["onnxruntime"], paths["int8-qat-nopad"]["openvino"]
    layer_profile = _mixed(onnx["int8-qat"], onnx["int8-qat-mixed"], shape)
    paths["int8-qat-mixed"] = {"onnxruntime": onnx["int8-qat-mixed"]}
    missing: dict[str, str] = {}
    try:
        from edgepipe.quant.nncf_ptq import nncf_quantize_ir, nncf_quantize_onnx

        nncf_quantize_onnx(onnx["fp32"], onnx["int8-ptq-nncf"], x_cal, meta)
        xml = nncf_quantize_ir(onnx["fp32"], onnx["int8-ptq-nncf"].with_suffix(".xml"), x_cal)
        paths["int8-ptq-nncf"]["openvino"] = xml
    except Exception as exc:  # noqa: BLE001 - NNCF is an optional extra: its absence is a result
        missing["int8-ptq-nncf"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        del paths["int8-ptq-nncf"]
    # each exported model is checked against the torch model it came from (PTQ: the FP32 model it quantizes)
    torch_twin = {"fp32": rebuild(fp).eval(), "int8-qat": qat_model, "int8-qat-naive": qat_model}
    torch_twin["int8-qat-ov"] = torch_twin["int8-qat-mixed"] = torch_twin["int8-qat-nopad"] = qat_model
    torch_twin["int8-ptq-ort"] = torch_twin["int8-ptq-nncf"] = torch_twin["fp32"]
    return paths, pre, torch_twin, missing, layer_profile


def _mixed(int8: Path, out: Path, shape: list[int]) -> dict:
    """export.float_layers: auto on our INT8 ONNX: the per-layer profile and the float choice it makes."""
    import onnx

    from edgepipe.quant.mixed import (
        METADATA_KEY,
        ORT_DISABLED_OPTIMIZERS,
        apply_float_layers,
        choose_float_layers,
        profile_layers,
    )

    profile = profile_layers(int8, shape)
    chosen = choose_float_layers(profile)
    proto = onnx.load(str(int8))
    apply_float_layers(proto, chosen)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(list(ORT_DISABLED_OPTIMIZERS))
    onnx.save(proto, str(out))
    return {"float_layers": chosen, "profile": profile}


def test_arrays(run: Path, pre, recipe, n: int) -> tuple[np.ndarray, np.ndarray]:
    data = SplitData(run / "split" / "split.json", recipe.data, pre, recipe.seed)
    ds = data.dataset("test")
    idx = sorted(random.Random(1).sample(range(len(ds)), min(n, len(ds))))
    xs, ys = zip(*(ds[i] for i in idx), strict=True)
    return np.stack([x.numpy() for x in xs]).astype(np.float32), np.array(ys)


def alternate_timing(runtimes: dict, sample: np.ndarray, rounds: int, iters: int, warmup: int) -> dict:
    """Round-robin (bench.harness.alternating_rounds): each round warms every model up (``warmup`` calls) and
    times ``iters`` calls of it, in a shuffled order; p50 over all calls, the per-round medians (for paired
    ratios) and their lowest and highest (how much the machine moved during the run)."""
    out = {}
    for k, per_round in alternating_rounds(runtimes, sample, rounds, iters, warmup).items():
        flat = [t for one in per_round for t in one]
        medians = round_medians(per_round)
        out[k] = {
            "p50_ms": float(np.percentile(flat, 50)),
            "p90_ms": float(np.percentile(flat, 90)),
            "mean_ms": float(np.mean(flat)),
            "round_median_min_ms": min(medians),
            "round_median_max_ms": max(medians),
            "round_medians_ms": medians,  # round r of every model ran back to back: paired ratios
            "rounds": len(per_round),
            "samples": len(flat),
        }
    return out


def modes(runtime: str, model: str, native: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """(mode label, runtime options) for a model on a runtime: every native float mode for FP32 (its float
    baselines); 'auto' (as our loaders load it) for INT8 on OpenVINO, plus the f32 hint for our INT8."""
    if runtime == "onnxruntime":
        return [("f32", {})]
    if model == "fp32":
        return [(p, {"precision": p}) for p in native["openvino"]]
    out = [("auto", {"precision": "auto"})]
    if model == "int8-qat":
        out.append(("f32", {"precision": "f32"}))
    return out


def add_speedups(rows: dict[str, dict], batches: list[int]) -> None:
    """Per row and batch: speed-up over the runtime's FP32 at f32, and over its fastest float mode (named)."""
    for row in rows.values():
        floats = [r for r in rows.values() if r["model"] == "fp32" and r["runtime"] == row["runtime"]]
        for b in batches:
            cell = row.get(f"b{b}")
            if cell is None:
                continue
            f32 = next((r for r in floats if r["mode"] == "f32" and f"b{b}" in r), None)
            timed = [r for r in floats if f"b{b}" in r]
            if f32:
                cell["speedup_vs_f32"] = f32[f"b{b}"]["p50_ms"] / cell["p50_ms"]
            if timed:
                best = min(timed, key=lambda r: r[f"b{b}"]["p50_ms"])
                cell["fastest_float"] = f"{row['runtime']} {best['mode']}"
                cell["speedup_vs_fastest_float"] = best[f"b{b}"]["p50_ms"] / cell["p50_ms"]
                # the same ratio taken within each round (both timed back to back), median over rounds:
                # drift of the machine between rounds (the shared host's load) cancels out
                paired = _paired(best[f"b{b}"], cell)
                if paired is not None:
                    pairs = zip(best[f"b{b}"]["round_medians_ms"], cell["round_medians_ms"], strict=True)
                    ratios = [f / q for f, q in pairs]
                    cell["paired_speedup_vs_fastest_float"] = paired
                    cell["paired_speedup_range"] = [min(ratios), max(ratios)]


def main() -> None:
    from edgepipe.bench.timing import cpu_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("artifacts/mnv3_qat"))
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mnv3_qat.yaml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default: the model's size and 224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=20)
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
    ap.add_argument("--cpu-name", help="names the result files (default: bench.timing.cpu_name)")
    ap.add_argument("--tag", default="", help="appended to the result file stem, e.g. efficientnet-lite0")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")
    import torch

    from edgepipe.runtimes import float_modes, get_runtime
    from edgepipe.runtimes.onnxruntime import ort_op_account
    from edgepipe.runtimes.openvino import native_float_precisions, ov_op_account
    from edgepipe.runtimes.predict import runtime_logits, torch_logits

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    own = recipe.data.image_size
    sizes = args.sizes or sorted({own, 224})
    env = environment()
    native = {rt: [label for label, _ in float_modes(rt)] for rt in ("onnxruntime", "openvino")}
    env["native_float"] = native
    env["openvino_native_float"] = list(native_float_precisions())
    name = args.cpu_name or env.get("cpu_name") or cpu_name()
    results = {"environment": env, "threads": args.threads, "run": str(args.run), "sizes": {}}
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            log.info("size %d: exporting", size)
            built = export_all(args.run, size, Path(work), args.calibration_images, recipe)
            paths, pre, twins, missing, layer_profile = built
            n_test = (args.test_images or 10**9) if size == own else args.other_size_images
            x, y = test_arrays(args.run, pre, recipe, n_test)
            refs = {}
            for m in {id(t): t for t in twins.values()}.values():
                refs[id(m)] = torch_logits(m, x)
            rts, rows = {}, {}
            failed = [{"model": m, "runtime": "both", "mode": "-", "error": e} for m, e in missing.items()]
            for model, files in paths.items():
                for runtime, path in files.items():
                    for mode, opts in modes(runtime, model, native):
                        key = f"{model}|{runtime}|{mode}"
                        try:
                            rt = get_runtime(runtime, path, threads=args.threads, **opts)
                            logits = runtime_logits(rt, x)
                        except Exception as exc:  # noqa: BLE001 - a model a runtime rejects is a result
                            err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                            failed.append({"model": model, "runtime": runtime, "mode": mode, "error": err})
                            log.warning("%s fails: %s", key, err)
                            continue
                        ref = refs[id(twins[model])]
                        rts[key] = rt
                        rows[key] = {
                            "model": model,
                            "runtime": runtime,
                            "mode": mode,
                            "file": path.suffix.lstrip("."),
                            "effective_precision": getattr(rt, "effective", {}).get("precision", "f32"),
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
            add_speedups(rows, args.batches)
            log.info("size %d: the shipped files loaded the usual way", size)
            plain = plain_loads(paths, size, args.rounds, Path(work))
            sample = np.zeros((1, 3, size, size), np.float32)
            accounts = {}
            for key, row in rows.items():
                if row["model"] == "int8-qat-naive":
                    continue
                path = paths[row["model"]][row["runtime"]]
                if row["runtime"] == "onnxruntime":
                    accounts[key] = _slim(ort_op_account(path, args.threads, sample, runs=30))
                else:
                    mode = row["mode"]
                    accounts[key] = _slim(ov_op_account(path, mode, args.threads, sample, runs=30))
            classes = {
                m: op_class_profile(paths[m]["onnxruntime"], args.threads, sample)
                for m in ("fp32", "int8-qat", "int8-qat-nopad", "int8-ptq-nncf")
                if m in paths
            }
            results["sizes"][str(size)] = {
                "test_images": len(y),
                "trained_size": size == own,
                "rows": list(rows.values()),
                "op_account": accounts,
                "ort_op_classes": classes,
                "ort_layer_profile": layer_profile,
                "plain_load": plain,
                "failed": failed,
            }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"int8_speedup_{name}{'_' + args.tag if args.tag else ''}"
    atomic_write_json(stem.with_suffix(".json"), results)
    atomic_write_text(stem.with_suffix(".md"), markdown(results, args.batches))
    print(markdown(results, args.batches))


class _Plain:
    """A model as a user loads it with each runtime's defaults: ``InferenceSession(path)``,
    ``core.compile_model(path, "CPU")``; no threads, precision or shape set."""

    def __init__(self, runtime: str, path: Path):
        if runtime == "onnxruntime":
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            self.predict = lambda x: sess.run(None, {name: x})[0]
        else:
            import openvino as ov

            request = ov.Core().compile_model(str(path), "CPU").create_infer_request()
            self.predict = lambda x: request.infer({0: x})


def plain_loads(paths: dict, size: int, rounds: int, work: Path) -> dict:
    """Batch 1, alternating rounds: FP32 and our INT8 as shipped (ONNX for ONNX Runtime, IR with batch 1
    fixed for OpenVINO) loaded with the runtimes' defaults, and the IRs with a dynamic batch (as export
    wrote them before): is the INT8 file fast for a user who sets nothing?"""
    from edgepipe.runtimes.openvino import convert_to_ir

    dynamic = {m: convert_to_ir(paths[m]["onnxruntime"], work / f"{m}_{size}_dynamic.xml", batch=None)
               for m in ("fp32", "int8-qat-nopad")}  # the IR export writes, before batch 1 was fixed
    fp32, int8 = paths["fp32"], paths["int8-qat"]
    pairs = {  # (FP32 file, INT8 file) loaded the same way
        "onnxruntime ({}.onnx)": ("onnxruntime", fp32["onnxruntime"], int8["onnxruntime"]),
        "openvino ({}.xml, batch 1)": ("openvino", fp32["openvino"], int8["openvino"]),
        "openvino ({}.xml, dynamic batch)": ("openvino", dynamic["fp32"], dynamic["int8-qat-nopad"]),
    }
    models, base_of = {}, {}
    for label, (runtime, fp32_file, int8_file) in pairs.items():
        f, q = f"fp32 {label.format('fp32')}", f"int8-qat {label.format('int8')}"
        models[f], models[q] = _Plain(runtime, fp32_file), _Plain(runtime, int8_file)
        base_of[f] = base_of[q] = f
    sample = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    lat = alternate_timing(models, sample, rounds, iters=20, warmup=5)
    for key, row in lat.items():
        row["paired_speedup_vs_fp32"] = _paired(lat[base_of[key]], row)
    return lat


def op_class_profile(path: Path, threads: int, sample: np.ndarray, runs: int = 30) -> dict:
    """ONNX Runtime per-node profile grouped into op classes, with the MACs each class does and its GMAC/s:
    how far each class is from the compute bound (the FP32 and INT8 graphs do the same MACs per class);
    ``nodes`` keeps every node's median time (the per-layer profile a mixed-precision choice reads)."""
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
    nodes = {
        name: {"op": ops[name], "ms": round(float(np.median(d[1:] if len(d) > 1 else d)) / 1e3, 4)}
        for name, d in sorted(per_node.items(), key=lambda kv: -float(np.median(kv[1])))
    }
    return {"classes": dict(out), "nodes": nodes}


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


def targets(block: dict, size: int, trained: bool) -> list[str]:
    """The issue's targets at batch 1: speed-up over the runtime's fastest float (1.5x at 224 px, 2.0x at the
    trained size), faster than NNCF's INT8, top-1 at least every PTQ's and within 0.2 of FP32, agreement."""
    rows = {f"{r['model']}|{r['runtime']}|{r['mode']}": r for r in block["rows"]}
    ours = [
        (rt, label, rows.get(f"{m}|{rt}|{mode}"))
        for rt, label, m, mode in (
            ("onnxruntime", "", "int8-qat", "f32"),
            ("onnxruntime", " (mixed precision)", "int8-qat-mixed", "f32"),
            ("openvino", "", "int8-qat", "auto"),
            ("openvino", " (OpenVINO-shaped IR)", "int8-qat-ov", "auto"),
        )
    ]
    out = []
    need = 1.5 if size >= 224 else 2.0
    for rt, label, q in ours:
        if q is None or "b1" not in q:
            continue
        sp = q["b1"].get("speedup_vs_fastest_float", 0.0)
        paired = q["b1"].get("paired_speedup_vs_fastest_float", sp)
        ok = sp >= need and paired >= need  # met only if both estimates say so
        out.append(
            f"- {rt}: our INT8{label} at least {need}x faster than the fastest float "
            f"({q['b1'].get('fastest_float')}): {sp:.2f}x (p50s), {paired:.2f}x (paired per round) "
            f"-> {'met' if ok else 'NOT met'}"
        )
        nn = rows.get(f"int8-ptq-nncf|{rt}|{'f32' if rt == 'onnxruntime' else 'auto'}")
        if nn and "b1" in nn:
            a, b = q["b1"]["p50_ms"], nn["b1"]["p50_ms"]
            ratio = _paired(nn["b1"], q["b1"])
            ok = a < b and (ratio is None or ratio > 1.0)
            out.append(
                f"- {rt}: our INT8{label} faster than NNCF's INT8: {a:.3f} vs {b:.3f} ms"
                + (f", NNCF/ours {ratio:.2f}x paired per round" if ratio is not None else "")
                + f" -> {'met' if ok else 'NOT met'}"
            )
        if not trained:
            continue
        f = rows.get(f"fp32|{rt}|f32")
        ptqs = [r for k, r in rows.items() if k.startswith("int8-ptq") and r["runtime"] == rt and r["mode"] in
                ("f32", "auto")]
        if f:
            best = max((p["test_top1"] for p in ptqs), default=0.0)
            ok = q["test_top1"] >= f["test_top1"] - 0.2 and q["test_top1"] >= best
            out.append(
                f"- {rt}: INT8{label} top-1 within 0.2 points of FP32 and at least every PTQ's: "
                f"{q['test_top1']:.2f}% vs FP32 {f['test_top1']:.2f}%, best PTQ {best:.2f}% "
                f"-> {'met' if ok else 'NOT met'}"
            )
        a = q["agreement_with_torch"]
        out.append(
            f"- {rt}: INT8{label} agrees with the torch fake-quant model on at least 99.5%: {100 * a:.2f}% "
            f"-> {'met' if a >= 0.995 else 'NOT met'}"
        )
    return out


def _ratio(profiles) -> str:
    ps = list(profiles)
    if not ps:
        return "–"
    return f"{sum(p['int8_ms'] for p in ps) / sum(p['float_ms'] for p in ps):.2f} ({len(ps)} layers)"


def _paired(slow: dict, fast: dict) -> float | None:
    return paired_ratio(slow.get("round_medians_ms"), fast.get("round_medians_ms"))


def _speedup_cell(cell: dict | None) -> str:
    if not cell:
        return " – | – | – |"
    f32, best = cell.get("speedup_vs_f32"), cell.get("speedup_vs_fastest_float")
    spread = f"{cell['round_median_min_ms']:.3f}–{cell['round_median_max_ms']:.3f}"
    vs_f32 = f"{f32:.2f}x" if f32 else "–"
    vs_best = f"{best:.2f}x vs {cell['fastest_float']}" if best else "–"
    if best and "paired_speedup_vs_fastest_float" in cell:
        vs_best += f" (paired {cell['paired_speedup_vs_fastest_float']:.2f}x)"
    return f" {cell['p50_ms']:.3f} ({spread}) | {vs_f32} | {vs_best} |"


def markdown(results: dict, batches: list[int]) -> str:
    env = results["environment"]
    native = env.get("native_float", {})
    out = [
        "# INT8 speed-up against each runtime's fastest float, on ONNX Runtime and OpenVINO",
        "",
        f"CPU: {env['cpu_model']} (`{env.get('cpu_name', '?')}`), {env['logical_cores']} logical cores, "
        f"ISA: {', '.join(env['isa_flags'])}; {results['threads']} threads; "
        f"onnxruntime {env['packages']['onnxruntime']}, openvino {env['packages']['openvino']}. "
        f"Produced by `benchmarks/int8_speedup.py` from the run `{results['run']}`; latency: p50 over all "
        "calls of alternating rounds, in brackets the lowest and highest per-round median.",
        "",
        "Native float modes on this CPU (the float baselines): "
        + "; ".join(f"{rt}: {', '.join(m)}" for rt, m in native.items())
        + ". Every speed-up names its baseline: `vs f32` divides the same runtime's FP32 at f32, "
        "`vs fastest` its fastest FP32 float mode at that batch (p50 over p50; `paired`: the median "
        "over rounds of the same ratio within each round, where both ran back to back, so drift of the "
        "shared machine between rounds cancels; a target counts as met only if both reach it). "
        "OpenVINO mode `auto` is how our loaders "
        "load an INT8 model (the plugin's default precision, bf16 float layers on a bf16 CPU); `f32` pins "
        "the hint.",
        "",
    ]
    for size, block in results["sizes"].items():
        trained = block.get("trained_size", True)
        note = "" if trained else (
            ": the model was trained at another size, so top-1 here means little; the rows are for latency"
        )
        out += [f"## {size} x {size} px ({block['test_images']} test images{note})", ""]
        head = "| model | runtime | mode (runs as) | file | test top-1 % | agrees with torch | size MB |"
        sep = "|---|---|---|---|---|---|---|"
        for b in batches:
            head += f" p50 ms b{b} | vs f32 b{b} | vs fastest b{b} |"
            sep += "---|---|---|"
        out += [head, sep]
        for r in block["rows"]:
            line = (
                f"| {r['model']} | {r['runtime']} | {r['mode']} ({r['effective_precision']}) | {r['file']} | "
                f"{r['test_top1']:.2f} | {100 * r['agreement_with_torch']:.2f}% ({r['torch_reference']}) | "
                f"{r['size_mb']:.2f} |"
            )
            for b in batches:
                line += _speedup_cell(r.get(f"b{b}"))
            out.append(line)
        for f in block.get("failed", []):
            out.append(f"| {f['model']} | {f['runtime']} | {f['mode']} | fails: {f['error']} |")
        out += ["", "Targets (batch 1):", "", *targets(block, int(size), trained), ""]
        plain = block.get("plain_load")
        if plain:
            out += [
                "Loaded the usual way (`InferenceSession(path)`, `core.compile_model(path, \"CPU\")`: no "
                "threads, precision or shape set; batch 1, alternating rounds; speed-up: the INT8 file over "
                "the FP32 file loaded the same way, paired per round):",
                "",
                "| file, runtime | p50 ms | INT8 over FP32 |",
                "|---|---|---|",
                *(f"| {k} | {v['p50_ms']:.3f} ({v['round_median_min_ms']:.3f}–{v['round_median_max_ms']:.3f})"
                  f" | {v['paired_speedup_vs_fp32']:.2f}x |" for k, v in plain.items()),
                "",
            ]
        lp = block.get("ort_layer_profile")
        if lp:
            prof = lp["profile"]
            dw = [p for p in prof.values() if p["group"] > 1]
            slow = [p for p in dw if p["out_channels"] % 16]
            out += [
                f"ONNX Runtime per-layer profile (each conv alone, uint8 in/out, min of round medians): "
                f"{len(lp['float_layers'])} of {len(prof)} convolutions run faster in float and are kept in "
                f"float in `int8-qat-mixed`; depthwise int8/float time: channels % 16 == 0: "
                f"{_ratio(p for p in dw if not p['out_channels'] % 16)}, other widths: {_ratio(slow)}.",
                "",
            ]
        cls = block["ort_op_classes"]
        fp, q = cls["fp32"]["classes"], cls["int8-qat"]["classes"]
        nn = cls.get("int8-ptq-nncf", {}).get("classes", {})
        nopad = cls.get("int8-qat-nopad", {}).get("classes", {})
        out += [
            "ONNX Runtime time by op class (batch 1, per-node profile; GMAC/s = MACs done / time):",
            "",
            "| op class | FP32 ms | FP32 GMAC/s | our INT8 ms | our INT8 GMAC/s | INT8/FP32 time "
            "| our INT8 unpadded ms | NNCF INT8 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind in sorted(set(fp) | set(q) | set(nn), key=lambda k: -fp.get(k, {"ms": 0})["ms"]):
            f, qq = fp.get(kind, {"ms": 0.0}), q.get(kind, {"ms": 0.0})
            ratio = f"{qq['ms'] / f['ms']:.2f}" if f["ms"] else "–"
            fg = f"{f['gmac_per_s']:.1f}" if f.get("gmac_per_s") else "–"
            qg = f"{qq['gmac_per_s']:.1f}" if qq.get("gmac_per_s") else "–"
            n = f"{nn[kind]['ms']:.3f}" if kind in nn else "–"
            u = f"{nopad[kind]['ms']:.3f}" if kind in nopad else "–"
            out.append(f"| {kind} | {f['ms']:.3f} | {fg} | {qq['ms']:.3f} | {qg} | {ratio} | {u} | {n} |")
        out.append("")
        acc = block["op_account"]
        cols = [k for k in ("fp32|openvino|f32", "fp32|openvino|bf16", "int8-qat|openvino|auto",
                            "int8-qat|openvino|f32", "int8-qat-ov|openvino|auto",
                            "int8-ptq-nncf|openvino|auto") if k in acc]
        if cols:
            by = {k: acc[k].get("time_by_type_us", {}) for k in cols}
            runs = {k: acc[k].get("runs", 1) for k in cols}
            names = {k: " ".join(k.split("|")[::2]) for k in cols}
            out += [
                "OpenVINO time by layer type (batch 1, per-layer counters, ms per inference):",
                "",
                "| layer type | " + " | ".join(names[k] for k in cols) + " |",
                "|---|" + "---|" * len(cols),
            ]
            types = sorted(
                {t for k in cols for t in by[k]}, key=lambda t: -sum(by[k].get(t, 0) for k in cols)
            )
            for t in types:
                vals = [by[k].get(t, 0) / runs[k] / 1e3 for k in cols]
                if sum(vals) < 0.005:
                    continue
                out.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
            out.append("")
        out.append(
            "INT8 share of kernel time (per-op profiles, batch 1): "
            + ", ".join(f"{k}: {100 * v.get('int8_time_share', 0):.0f}%" for k, v in acc.items())
        )
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
