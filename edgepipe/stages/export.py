"""export: FP32 ONNX (finetune) and INT8 QDQ ONNX (qat), OpenVINO IR, and agreement with torch recorded."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgepipe import __version__
from edgepipe.artifacts import StageResult, atomic_write_json
from edgepipe.data.loaders import SplitData
from edgepipe.errors import ParityError
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import Recipe
from edgepipe.runtimes.registry import qdq_runtimes, runtime_for, runtime_spec
from edgepipe.stages.base import StageContext, StageSpec, check_names
from edgepipe.train.metrics import agreement

log = logging.getLogger(__name__)


def config(recipe: Recipe) -> dict[str, Any]:
    from edgepipe.targets import resolve

    # the targets as this machine checks them: a newly installed emulator re-runs the checks
    targets = [(p.target.name, p.how) for p in resolve(recipe.targets)] if recipe.export.target_images else []
    # export.float_layers: auto times layers on bench.threads; everything else here is a transform or a check
    threads = {"bench_threads": recipe.bench.threads} if recipe.export.float_layers == "auto" else {}
    # metrics: what the recorded numbers mean (2: target agreement a fraction), so no cached result of
    # another meaning is reused
    return {"export": recipe.export.model_dump(), **threads, "targets": targets, "metrics": 2}


def check(recipe: Recipe) -> None:
    check_names("export.openvino_qdq", recipe.export.openvino_qdq, qdq_runtimes())


def target_sample(n: int, r: Recipe) -> np.ndarray:
    """The test images the targets run on: a seeded sample of export.target_images, in split order."""
    return np.sort(np.random.default_rng(r.seed).permutation(n)[: min(n, r.export.target_images)])


def _check_targets(path, xml, x: np.ndarray, ref: np.ndarray, y: np.ndarray, r: Recipe) -> list[dict]:
    """int8.onnx as shipped, run by ONNX Runtime's own kernels for each target (targets/), and the IR by
    OpenVINO's where it runs on an emulated x86 target (the host's OpenVINO is checked on the whole split
    above), on a seeded sample of the test split: agreement with the QAT torch model and top-1 per target."""
    from edgepipe.targets import check_targets, resolve

    idx = target_sample(len(x), r)
    if len(idx) == 0:
        return []
    placements = resolve(r.targets)
    jobs = [(path, runtime_for("onnx").name, placements)]
    ov = [p for p in placements if p.how == "emulated" and p.target.arch == "x86_64"]
    if xml is not None and ov:
        jobs.append((xml, runtime_for("ir").name, ov))
    results = check_targets(jobs, x[idx], ref[idx], y[idx])
    return [t.to_dict() for t in results]


def _target_gate(metrics: dict, r: Recipe) -> None:
    """The export gate per target: a checked target under export.min_agreement stops the build."""
    for key, m in metrics.items():
        for t in m.get("targets", ()):
            if t["agreement"] is None or t["agreement"] >= r.export.min_agreement:
                continue
            fix = (
                "qat.numerics: s7 (7-bit weights, exact on every x86 and ARM kernel)"
                if r.qat.numerics == "s8" and t["kernel"].startswith("AVX2")
                else "raise qat.epochs or check export.float_layers"
            )
            raise ParityError(
                f"{key} model: {t['runtime']} on target {t['target']} ({t['how']}, {t['kernel']}) agrees "
                f"with torch on only {100 * t['agreement']:.2f}% of {t['images']} test images "
                f"(< export.min_agreement {100 * r.export.min_agreement:.2f}%); fix: {fix}, or drop "
                f"{t['target']} from targets"
            )


def _float_layers(path, pre: Preprocessing, r: Recipe) -> dict | None:
    """export.float_layers: keep the pinned (or, for 'auto', the measured-faster) convolutions of int8.onnx in
    float for ONNX Runtime; returns the choice and, for 'auto', the per-layer profile it came from."""
    from edgepipe.errors import RecipeError
    from edgepipe.quant.mixed import choose_float_layers, profile_layers, write_float_layers

    want = r.export.float_layers
    if not want:
        return None
    profile = None
    if want == "auto":
        profile = profile_layers(path, list(pre.input_size), threads=r.bench.threads)
        want = tuple(choose_float_layers(profile))
    try:
        write_float_layers(path, path, want)
    except KeyError as e:
        raise RecipeError(
            f"export.float_layers: {e.args[0]} in {path.name}; fix: use names from the export manifest's "
            "float_layers.profile (export.float_layers: auto writes it) or remove the key"
        ) from None
    log.info("export: %d convolutions kept in float for ONNX Runtime", len(want))
    source = "measured" if profile is not None else "recipe"
    return {"source": source, "layers": list(want), "profile": profile}


def _ir(export_model, onnx_path, xml, size: list[int], meta: dict, r: Recipe, qdq: bool):
    """The IR OpenVINO gets: the ONNX as exported, before any ONNX Runtime-only shaping (padded depthwise
    widths, float layers), or (INT8 with export.openvino_qdq: openvino) the QAT model re-exported with
    OpenVINO's Q/DQ placement."""
    import tempfile
    from pathlib import Path

    from edgepipe.runtimes.openvino import convert_to_ir

    shape = runtime_spec(r.export.openvino_qdq).qdq
    if not qdq or shape == runtime_for("onnx").qdq:
        return convert_to_ir(onnx_path, xml)
    from edgepipe.quant.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgepipe-ov-") as tmp:
        shaped = Path(tmp) / onnx_path.name
        export_onnx(export_model, shaped, size, meta, r.export.opset, qdq=True, qdq_shape=shape)
        return convert_to_ir(shaped, xml)


def write_model_files(
    export_model, path, size: list[int], meta: dict, r: Recipe, qdq: bool, numerics: str | None
) -> tuple[Any, list]:
    """The files export ships for one model at input ``size``: ``path`` (.onnx) and, with export.openvino,
    its IR beside it; returns (the IR's .xml or None, the padded depthwise convs). The IR first, from the
    graph as exported; then the ONNX Runtime-only shaping of the INT8 ONNX (padded depthwise widths, uint8
    weights for u8u8). benchmarks/ re-export at other sizes through here, so they time what a build ships."""
    from edgepipe.quant.export import export_onnx, pad_for_onnxruntime

    shape = runtime_for("onnx").qdq
    export_onnx(export_model, path, size, meta, r.export.opset, qdq=qdq, qdq_shape=shape, pad_channels=0)
    xml = None
    if r.export.openvino:
        xml = _ir(export_model, path, path.with_suffix(".xml"), size, meta, r, qdq)
    padded = []
    if qdq and r.export.pad_channels:
        padded = pad_for_onnxruntime(path, r.export.pad_channels)
    if qdq and numerics == "u8u8":
        from edgepipe.quant.u8u8 import weights_to_uint8

        weights_to_uint8(path)  # the same integers, on ONNX Runtime's U8U8 kernels
    return xml, padded


def standard_table_gmacs(fp_ckpt: dict, size: list[int], r: Recipe) -> float | None:
    """For a model.variant other than standard: the GMACs of the arch's standard block table at the same
    size, counted from its exported graph, so the report can say what the variant saves."""
    import tempfile
    from pathlib import Path

    from edgepipe.bench.macs import count_macs
    from edgepipe.models.build import build_model
    from edgepipe.quant.export import export_onnx
    from edgepipe.recipe import ModelConfig

    cfg = ModelConfig(**{**fp_ckpt["model_cfg"], "pretrained": "none"})
    if cfg.variant == "standard":
        return None
    model, _ = build_model(cfg.model_copy(update={"variant": "standard"}), fp_ckpt["num_classes"])
    with tempfile.TemporaryDirectory(prefix="edgepipe-std-") as tmp:
        path = export_onnx(model.eval(), Path(tmp) / "standard.onnx", size, {}, r.export.opset)
        return float(count_macs(path)["gmacs"])


def run(ctx: StageContext) -> StageResult:
    from edgepipe.models.build import load_qat_model, rebuild
    from edgepipe.models.checkpoint import read_checkpoint
    from edgepipe.quant.qdq import to_qdq_module
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits, torch_logits

    r = ctx.recipe
    fp_ckpt = read_checkpoint(ctx.input("checkpoint"))
    q_ckpt = read_checkpoint(ctx.input("qat_checkpoint"))
    pre = Preprocessing.from_dict(fp_ckpt["preprocessing"])
    base_meta = {
        "edgepipe_version": __version__,
        "arch": fp_ckpt["arch"],
        "classes": fp_ckpt["classes"],
        "preprocessing": pre.to_dict(),
        "model_cfg": fp_ckpt["model_cfg"],
    }
    fp_model = rebuild(fp_ckpt).eval()
    q_model = load_qat_model(q_ckpt)
    models = {
        "fp32": (fp_model, fp_model, False),
        "int8": (to_qdq_module(q_model), q_model, True),
    }
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    x, y = data.arrays("test")
    outputs, metrics = {}, {}
    for key, (export_model, reference, qdq) in models.items():
        path = ctx.out_dir / f"{key}.onnx"
        meta = {**base_meta, "precision": key, "quantization": q_ckpt.get("quant") if qdq else None}
        numerics = q_ckpt.get("quant", {}).get("numerics")
        xml, padded = write_model_files(export_model, path, list(pre.input_size), meta, r, qdq, numerics)
        mixed = _float_layers(path, pre, r) if qdq else None
        outputs[f"onnx_{key}"] = path.name
        ref = torch_logits(reference, x)
        if not qdq:
            fp32_ref = ref
        ort = runtime_logits(get_runtime(runtime_for("onnx").name, path, threads=r.bench.threads), x)
        m = {
            "torch_test_top1": 100.0 * float((ref.argmax(1) == y).mean()),
            "ort_test_top1": 100.0 * float((ort.argmax(1) == y).mean()),
            "ort_agreement": agreement(ref.argmax(1), ort.argmax(1)),
            "ort_max_abs_logit_diff": float(np.abs(ref - ort).max()),
            "test_images": len(y),
        }
        if xml is not None:
            m["openvino_qdq"] = r.export.openvino_qdq if qdq else None
            outputs[f"ir_{key}"] = xml.name
            outputs[f"ir_{key}_bin"] = xml.with_suffix(".bin").name
            # as our loaders run it (precision 'auto': f32 for FP32, the plugin default for INT8, which is
            # bf16 for the float layers on a bf16 CPU), and, where that differs, with the f32 hint
            ov_rt = get_runtime(runtime_for("ir").name, xml, threads=r.bench.threads)
            ov = runtime_logits(ov_rt, x)
            m["openvino_precision"] = ov_rt.effective.get("precision")
            m["openvino_agreement"] = agreement(ref.argmax(1), ov.argmax(1))
            m["openvino_test_top1"] = 100.0 * float((ov.argmax(1) == y).mean())
            if m["openvino_precision"] != "f32":
                f32_rt = get_runtime(runtime_for("ir").name, xml, threads=r.bench.threads, precision="f32")
                ov32 = runtime_logits(f32_rt, x)
                m["openvino_f32_agreement"] = agreement(ref.argmax(1), ov32.argmax(1))
                m["openvino_f32_test_top1"] = 100.0 * float((ov32.argmax(1) == y).mean())
        if mixed is not None:
            m["float_layers"] = mixed
        if not qdq and (std := standard_table_gmacs(fp_ckpt, list(pre.input_size), r)) is not None:
            m["standard_table_gmacs"] = std  # model.variant: what the arch's standard table would cost
        if qdq:  # depthwise widths padded for ONNX Runtime (export.pad_channels)
            m["padded_channels"] = padded
            m["numerics"] = q_ckpt.get("quant", {}).get("numerics", "s8")
            m["targets"] = _check_targets(path, xml, x, ref, y, r)
            idx = target_sample(len(x), r)  # FP32 on the targets' images: the top-1 each target is held to
            hit = fp32_ref[idx].argmax(1) == y[idx]
            m["targets_fp32_top1"] = 100.0 * float(hit.mean()) if len(idx) else None
        metrics[key] = m
        log.info(
            "export %s: ORT agrees with torch on %.2f%% of %d test images",
            key,
            100 * m["ort_agreement"],
            len(y),
        )
    atomic_write_json(ctx.out_dir / "agreement.json", metrics)
    low = [
        (k, a, v[a])
        for k, v in metrics.items()
        for a in ("ort_agreement", "openvino_agreement")
        if a in v and v[a] < r.export.min_agreement
    ]
    if low:
        # The stage folder is discarded on failure; keep the evidence beside it.
        evidence = atomic_write_json(ctx.run_dir / "export.failed-agreement.json", metrics)
        k, a, v = low[0]
        f32 = metrics[k].get("openvino_f32_agreement") if a == "openvino_agreement" else None
        prec = metrics[k].get("openvino_precision")
        at = f" at precision {prec} ({100 * f32:.2f}% with the f32 hint)" if f32 else ""
        raise ParityError(
            f"{k} model: {a.split('_')[0]} agrees with torch on only {100 * v:.2f}% of the test split{at} "
            f"(< export.min_agreement {100 * r.export.min_agreement:.2f}%); see {evidence}"
        )
    try:
        _target_gate(metrics, r)
    except ParityError as exc:
        evidence = atomic_write_json(ctx.run_dir / "export.failed-agreement.json", metrics)
        raise ParityError(f"{exc}; see {evidence}") from None
    (ctx.run_dir / "export.failed-agreement.json").unlink(missing_ok=True)  # a failed try's, now stale
    return StageResult(outputs=outputs, metrics=metrics)


STAGE = StageSpec(
    name="export",
    needs=("split", "checkpoint", "qat_checkpoint"),
    outputs=(
        *("onnx_fp32", "ir_fp32", "ir_fp32_bin"),
        *("onnx_int8", "ir_int8", "ir_int8_bin"),  # ir_*: with export.openvino only
    ),
    config=config,
    run=run,
    check=check,
)
