"""`edgepipe bench MODEL...`: any exported model on any runtime, measured so the numbers can be trusted.

Every input problem (not a model, wrong input shape or layout, missing runtime, classes the model lacks,
malformed gate) is found before the first timed run. Then, per model and runtime: peak memory and latency
(cold first inference, then warm-up, percentiles), accuracy on ``--data`` through that runtime, agreement
with ``--reference``, and MACs counted on the ONNX graph. With ``--target``, each ``.onnx`` also runs on each
named CPU's own ONNX Runtime kernels (edgepipe.targets: natively, or under qemu-user: numerics only) and is
scored against its host run (or ``--reference``). Output: an ``edgepipe.bench/3`` document (the
schema a run's report.json shares, docs/report_schema.md), a Markdown table, optional PNG plots, and gate
results that ``edgepipe.bench.gates.enforce`` turns into exit 8.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import atomic_write_json, sha256_file
from edgepipe.bench import accuracy as acc
from edgepipe.bench import gates as gate_mod
from edgepipe.bench.harness import model_size_mb
from edgepipe.bench.loading import (
    BenchModel,
    build_runtime,
    check_runtimes_installed,
    compute,
    load_model,
    parse_model_arg,
    select_runtimes,
    thop_check,
    unique_names,
)
from edgepipe.bench.measure import Entry, Settings, measure
from edgepipe.bench.report import drop_samples, markdown, write_plots
from edgepipe.bench.rows import add_paired, baseline_policy
from edgepipe.cpu import native_bf16
from edgepipe.errors import BenchInputError
from edgepipe.gates import parse_gate
from edgepipe.runtimes.registry import model_kind, runtime_for, runtime_spec
from edgepipe.train.metrics import agreement

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "f32", "bf16")
HINTS = ("LATENCY", "THROUGHPUT")


@dataclass
class BenchOptions:
    runtimes: list[str] | None = None  # None: each model on its natural runtime
    threads: int = 2
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    warmup: int = 20
    min_iters: int = 100
    min_seconds: float = 2.0
    precision: str = "auto"  # OpenVINO: f32 for float models, the plugin default for INT8 (fastest)
    hint: str = "LATENCY"  # OpenVINO performance hint
    data: str | None = None
    limit: int | None = None
    preprocessing: acc.PreprocessingFlags = field(default_factory=acc.PreprocessingFlags)
    reference: str | None = None
    gates: list[str] = field(default_factory=list)
    json_out: Path | None = None
    plots_dir: Path | None = None
    opset: int = 17
    targets: list[str] | None = None  # --target: CPUs each .onnx is checked on (edgepipe.targets)
    target_images: int = 500  # at most this many of the --data images per target check (a seeded subset)
    devices: list[str] | None = None  # --on: ssh:// devices each .onnx is benched on (targets.device)
    device_images: int = 500  # at most this many of the --data images are copied to each device
    device_timeout: float = 900.0  # seconds one device's whole run may take
    paired_rounds: int = 15  # alternating rounds between the rows and between the models on a device; 0: off
    max_top1_drop: float = 0.5  # the verdict: fastest model within this many top-1 points of the best float


@dataclass
class BenchResult:
    doc: dict[str, Any]
    markdown: str

    @property
    def gates(self) -> list[dict[str, Any]]:
        return self.doc["gates"]


@dataclass
class _Plan:
    """What a model will be fed: resolved before any timing, so bad input fails fast."""

    model: BenchModel
    pre: dict | None
    pre_source: str
    size: list[int]
    classes: list[str] | None = None
    classes_source: str | None = None
    fixed_batch: int | None = None


def _check_options(models: list, opts: BenchOptions) -> None:
    problems = [
        (not models, "no model given", "name one or more .onnx/.xml/model.pt files"),
        (opts.threads < 1, f"--threads {opts.threads} must be >= 1", "pass --threads 1 or more"),
        (
            not opts.batch_sizes or min(opts.batch_sizes) < 1,
            f"--batch-size {opts.batch_sizes} must be >= 1",
            "pass --batch-size 1 or more",
        ),
        (
            opts.precision not in PRECISIONS,
            f"unknown --precision '{opts.precision}'",
            f"use {'|'.join(PRECISIONS)}",
        ),
        (opts.hint not in HINTS, f"unknown --hint '{opts.hint}'", f"use {'|'.join(HINTS)}"),
        (
            opts.reference is not None and opts.data is None,
            "--reference needs images to compare on",
            "pass --data too",
        ),
        (
            bool(opts.targets) and opts.data is None,
            "--target needs images: agreement on a target is measured on --data",
            "pass --data too (an ImageFolder or a built-in dataset)",
        ),
        (
            opts.target_images < 1,
            f"--target-images {opts.target_images} must be >= 1",
            "pass --target-images 1 or more",
        ),
        (
            bool(opts.devices) and opts.data is None,
            "--on needs images: top-1 and agreement on a device are measured on --data",
            "pass --data too (an ImageFolder or a built-in dataset)",
        ),
        (
            opts.device_images < 1 or opts.device_timeout <= 0 or opts.paired_rounds < 0,
            f"--device-images {opts.device_images} / --device-timeout {opts.device_timeout} / "
            f"--paired-rounds {opts.paired_rounds} out of range",
            "pass --device-images >= 1, --device-timeout > 0, --paired-rounds >= 0",
        ),
    ]
    for bad, what, fix in problems:
        if bad:
            raise BenchInputError(f"{what}; fix: {fix}")
    for name in opts.runtimes or []:
        runtime_spec(name)  # an unknown name fails here, naming the known ones


def _plan(model: BenchModel, opts: BenchOptions, data: acc.EvalData | None) -> _Plan:
    pre, source = acc.resolve_preprocessing(model, opts.preprocessing, need=data is not None)
    plan = _Plan(model, pre, source, acc.input_size(model, pre))
    fixed = model.input_shape[0] if model.input_shape else None
    if fixed is not None and any(b != fixed for b in opts.batch_sizes):
        raise BenchInputError(
            f"{model.name} has a fixed batch of {fixed}; fix: pass --batch-size {fixed} or export it with a "
            "dynamic batch axis"
        )
    plan.fixed_batch = fixed
    if data is not None:
        plan.classes, plan.classes_source = acc.resolve_classes(model, opts.preprocessing, data)
    return plan


def _accuracy(
    rt, plan: _Plan, images: acc.Images, data: acc.EvalData
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Scores, predicted class names and the logits themselves (the host logits --target compares with)."""
    logits = acc.predict(rt, images, plan.pre, plan.fixed_batch or 64, plan.fixed_batch is not None)  # type: ignore[arg-type]
    names = acc.output_names(plan.model.name, plan.classes, data, int(logits.shape[1]))
    return acc.score(logits, images.labels, data, names), acc.predicted_names(logits, names), logits


def _run_reference(plan: _Plan, opts: BenchOptions, images, data) -> tuple[dict[str, Any], np.ndarray]:
    m = plan.model
    rt = build_runtime(m, m.runtimes[0], opts.threads, opts.precision, opts.hint)
    scores, preds, _ = _accuracy(rt, plan, images, data)
    log.info("reference %s on %s: top-1 %.2f", m.name, m.runtimes[0], scores["top1"])
    return {"model": m.name, "file": str(m.path), "runtime": m.runtimes[0], **scores}, preds


def bench_models(models: list[str | Path], opts: BenchOptions) -> BenchResult:
    """Benchmark every model on its runtimes; write JSON/plots if asked; gates are evaluated, not enforced."""
    gates = [parse_gate(g) for g in opts.gates]
    _check_options(models, opts)
    gate_mod.check_inputs(gates, len(models), opts.data is not None, opts.reference is not None)
    placements = None
    if opts.targets:
        from edgepipe.targets import resolve

        placements = resolve(opts.targets)  # an unknown name fails here, before any model is loaded
    if opts.devices:
        from edgepipe.targets.ssh import parse_device

        for spec in opts.devices:
            parse_device(spec)  # a malformed --on fails here, before any model is loaded
    opts = replace(opts, batch_sizes=list(dict.fromkeys(opts.batch_sizes)))  # the caller's object is kept
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        args = [parse_model_arg(str(m)) for m in models]
        names = unique_names([p for p, _ in args])
        loaded = []
        for (path, per_model), name in zip(args, names, strict=True):
            model = load_model(path, name, Path(tmp), opts.opset)
            model.runtimes = select_runtimes(model, per_model, opts.runtimes)
            loaded.append(model)
        ref = None
        if opts.reference is not None:
            ref_path, ref_rts = parse_model_arg(opts.reference)
            ref = load_model(ref_path, str(ref_path), Path(tmp), opts.opset)
            ref.runtimes = select_runtimes(ref, ref_rts, None)
            if len(ref.runtimes) != 1:
                raise BenchInputError(f"--reference {opts.reference}: one runtime only; fix: REF@runtime")
        check_runtimes_installed({r for m in [*loaded, *([ref] if ref else [])] for r in m.runtimes})
        data = acc.open_data(opts.data, opts.limit) if opts.data else None
        plans = [_plan(m, opts, data) for m in loaded]
        images = acc.Images(data) if data else None
        reference, ref_preds = (None, None)
        if ref is not None:
            reference, ref_preds = _run_reference(_plan(ref, opts, data), opts, images, data)
        keep = placements is not None or bool(opts.devices)  # their agreement is with the host's logits
        host_logits: dict[str, np.ndarray] = {}
        entries, model_docs, notes = [], [], []
        for plan in plans:
            doc, model_entries = _entries(plan, opts, data, images, ref_preds, host_logits if keep else None)
            model_docs.append(doc)
            entries += model_entries
            notes += _notes(plan, doc, opts)
        measured = measure(entries, _timing(opts), reference=_benched_reference(opts, loaded, notes))
        rows = measured.rows
        targets = None
        if placements is not None:
            targets, note = _check_targets(plans, placements, opts, images, data, host_logits, ref_preds,
                                           reference, rows)  # fmt: skip
            notes.append(note)
        if opts.devices:
            device_rows, note = _bench_devices(plans, opts, images, data, host_logits, ref_preds, reference)
            targets = (targets or []) + device_rows
            notes.append(note)
    notes += _precision_notes(rows, opts, measured.environment)
    plots = {} if opts.plots_dir is None else write_plots(rows, Path(opts.plots_dir))
    drop_samples(rows)
    doc = measured.document(
        settings=_settings(opts, args),
        data=data.describe() if data else None,
        models=model_docs,
        gates=gate_mod.evaluate(gates, rows),
        notes=notes,
        plots={k: str(p) for k, p in plots.items()},
        reference=reference,
        targets=targets,
    )
    if opts.json_out is not None:
        atomic_write_json(opts.json_out, doc)
    return BenchResult(doc, markdown(doc))


def _timing(opts: BenchOptions) -> Settings:
    return Settings(threads=opts.threads, batch_sizes=opts.batch_sizes, warmup=opts.warmup,
                    min_iters=opts.min_iters, min_seconds=opts.min_seconds, rounds=opts.paired_rounds,
                    keep_samples=opts.plots_dir is not None)  # fmt: skip


def _benched_reference(opts: BenchOptions, loaded: list[BenchModel], notes: list[str]) -> str | None:
    """The --reference model's name when it is also benched (speed-ups then divide by it), else None (the
    fastest float model is the baseline; the reference is for agreement only)."""
    if opts.reference is None:
        return None
    ref_path = parse_model_arg(opts.reference)[0].resolve()
    hit = next((m.name for m in loaded if m.path.resolve() == ref_path), None)
    if hit is None:
        notes.append(f"--reference {opts.reference} is not benched: agreement is with it, speed-up and top-1 "
                     "drop divide by the fastest float model")  # fmt: skip
    return hit


def _entries(plan: _Plan, opts: BenchOptions, data, images, ref_preds,
             host_logits: dict[str, np.ndarray] | None) -> tuple[dict[str, Any], list[Entry]]:  # fmt: skip
    """The model's document entry and its measurement entries, one per runtime; ``host_logits`` (if given)
    collects its logits on the data through the runtime the target checks run (ONNX Runtime)."""
    m = plan.model
    comp = compute(m)
    doc = {
        "name": m.name,
        "file": str(m.path),
        "kind": m.kind,
        "sha256": sha256_file(m.path),
        "size_mb": round(model_size_mb(m.path), 3),
        "input_shape": list(m.input_shape),
        "input_size": plan.size,
        "preprocessing": plan.pre,
        "preprocessing_source": plan.pre_source,
        "classes": plan.classes,
        "classes_source": plan.classes_source,
        "runtimes": m.runtimes,
        "compute": comp,
        "thop_check": thop_check(m, comp.get("macs"), plan.size),
    }

    def scorer(rt_name: str):
        def score(rt) -> dict[str, Any]:
            if data is None:
                return {}
            scores, preds, logits = _accuracy(rt, plan, images, data)
            if host_logits is not None and rt_name == runtime_for("onnx").name and m.kind == "onnx":
                host_logits[m.name] = logits
            if ref_preds is not None:
                scores["agreement"] = agreement(preds, ref_preds)
            return scores

        return score

    entries = []
    for rt_name in m.runtimes:
        moded = runtime_spec(rt_name).takes_precision
        entries.append(Entry(
            model=m.name, file=m.path, kind=m.kind, runtime=rt_name,
            build=lambda rt_name=rt_name: build_runtime(m, rt_name, opts.threads, opts.precision, opts.hint),
            input_size=plan.size, compute=comp, is_float=not m.quantized,
            precision=opts.precision if moded else None, perf_hint=opts.hint if moded else None,
            score=scorer(rt_name),
        ))  # fmt: skip
    return doc, entries


def _target_sample(n: int, limit: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """The indices of the --data images the targets run on: all of them, else a seeded random subset (in
    data order), and how to say which."""
    if n <= limit:
        return np.arange(n), f"all {n} images"
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
    return idx, f"a seeded random subset (seed {seed}, --target-images {limit}) of the {n} images"


def _take(images: acc.Images, pre: dict, idx: np.ndarray) -> np.ndarray:
    """The preprocessed images at ``idx`` (sorted), decoded as the accuracy runs decode them."""
    out, start = [], 0
    for batch in images.batches(pre, 256):
        lo, hi = np.searchsorted(idx, [start, start + len(batch)])
        if hi > lo:
            out.append(batch[idx[lo:hi] - start])
        start += len(batch)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def _not_checkable(plan: _Plan) -> str | None:
    """Why --target cannot run this model (the target runner runs an .onnx on ONNX Runtime), or None."""
    m = plan.model
    if m.kind != "onnx":
        what, fix = {
            "openvino-ir": ("an OpenVINO IR", "bench the .onnx it was converted from"),
            "checkpoint": ("a torch checkpoint", "bench its exported .onnx (a run's export/int8.onnx)"),
        }.get(m.kind, (f"a {m.kind} model", "bench an exported .onnx"))
        return f"{what}, not an .onnx: --target runs .onnx files on ONNX Runtime; fix: {fix}"
    if plan.fixed_batch is not None:
        return (f"{m.name} has a fixed batch of {plan.fixed_batch}, the target runner feeds batches of up to "
                "64; fix: export it with a dynamic batch axis")  # fmt: skip
    return None


def _scored_inputs(plan: _Plan, opts: BenchOptions, images: acc.Images, data: acc.EvalData,
                   host_logits: dict[str, np.ndarray], ref_preds, idx: np.ndarray):  # fmt: skip
    """What a target or device run of ``plan``'s model is fed and scored against: the images at ``idx``, the
    reference logits (its own host ONNX Runtime run, or one-hot of the --reference's predictions; +1 column:
    a class the model lacks) and the labels in the model's outputs."""
    from edgepipe.runtimes.predict import runtime_logits

    m = plan.model
    x = _take(images, plan.pre, idx)  # type: ignore[arg-type]
    host = host_logits.get(m.name)
    if host is None:  # the model was not benched on onnxruntime: its host run, here
        rt = build_runtime(m, runtime_for("onnx").name, opts.threads, opts.precision, opts.hint)
        host = runtime_logits(rt, x)
        del rt
    else:
        host = host[idx]
    names = acc.output_names(m.name, plan.classes, data, int(host.shape[1]))
    index = {n: i for i, n in enumerate(names)}
    labels = np.asarray([index[data.classes[y]] for y in images.labels[idx]], dtype=np.int64)
    ref = host
    if ref_preds is not None:
        ref_idx = np.asarray([index.get(n, len(names)) for n in ref_preds[idx]], dtype=np.int64)
        ref = np.eye(len(names) + 1, dtype=np.float32)[ref_idx]
    return x, ref, labels


def _bench_devices(plans: list[_Plan], opts: BenchOptions, images: acc.Images, data: acc.EvalData,
                   host_logits: dict[str, np.ndarray], ref_preds, reference):  # fmt: skip
    """Every .onnx on every --on device (edgepipe.targets.device): their TargetRow dicts (``how: device``, the
    device's own timing) and the note that says on what. A device that fails stops the bench (one line)."""
    from edgepipe.targets.device import DeviceModel, DeviceTiming, bench_on_device

    idx, which = _target_sample(len(data.samples), opts.device_images)
    models, skipped = [], []
    for plan in plans:
        why = _not_checkable(plan)
        if why is not None:
            log.warning("%s: not benched on devices: %s", plan.model.name, why.replace("--target", "--on"))
            skipped.append(plan.model.name)
            continue
        x, ref, labels = _scored_inputs(plan, opts, images, data, host_logits, ref_preds, idx)
        models.append(DeviceModel(plan.model.name, plan.model.path, x, ref, labels))
    if not models:
        raise BenchInputError("--on: no .onnx model to bench on a device; fix: give .onnx files (a run's "
                              "export/int8.onnx and fp32.onnx)")  # fmt: skip
    timing = DeviceTiming(warmup=opts.warmup, min_iters=opts.min_iters, min_seconds=opts.min_seconds,
                          rounds=opts.paired_rounds, threads=opts.threads,
                          timeout_s=opts.device_timeout)  # fmt: skip
    out = []
    floats = [p.model.name for p in plans if not p.model.quantized]
    for spec in dict.fromkeys(opts.devices or []):
        rows = [{"model": m.name, **r.to_dict()} for m, r in
                zip(models, bench_on_device(spec, models, timing), strict=True)]  # fmt: skip
        policy = baseline_policy(floats, _benched_reference(opts, [p.model for p in plans], []))
        add_paired(rows, replace(policy, match=("target",)))  # one device's rows: batch 1, ONNX Runtime
        out += rows
    vs = (f"the --reference {reference['model']} on {reference['runtime']} (this machine)"
          if reference is not None else "the same model on ONNX Runtime on this machine (host)")  # fmt: skip
    note = (f"devices: each .onnx ran on {which} of {data.name} on each --on device (ONNX Runtime, "
            f"{opts.threads} thread(s), batch-1 latency); agreement vs {vs}"
            + (f"; not benched there: {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    return out, note


def _check_targets(plans: list[_Plan], placements, opts: BenchOptions, images: acc.Images, data: acc.EvalData,
                   host_logits: dict[str, np.ndarray], ref_preds, reference, rows: list[dict]):  # fmt: skip
    """Every .onnx on every placement (edgepipe.targets.check_targets), scored against the model's own host
    ONNX Runtime logits, or the --reference model's predictions; the TargetRow dicts and the note that says
    on what."""
    from edgepipe.targets import TargetResult, check_targets
    from edgepipe.targets.check import kernel_name

    idx, which = _target_sample(len(data.samples), opts.target_images)
    onnx_rt = runtime_for("onnx").name  # the runtime the target runner runs every .onnx on
    out = []
    for plan in plans:
        m = plan.model
        why = _not_checkable(plan)
        if why is not None:
            log.warning("%s: targets not checked: %s", m.name, why)
            results = [TargetResult(p.target.name, p.target.title, "not checked",
                                    kernel_name(onnx_rt, p.target), onnx_rt, reason=why)
                       for p in placements]  # fmt: skip
        else:
            x, ref, labels = _scored_inputs(plan, opts, images, data, host_logits, ref_preds, idx)
            log.info("%s: checking %d target(s) on %d images (emulated targets are slow)",
                     m.name, sum(p.checked for p in placements), len(idx))  # fmt: skip
            results = check_targets([(m.path, onnx_rt, placements)], x, ref, labels)
        p50 = next(
            (
                r["latency"]["p50_ms"]
                for r in rows
                if r["model"] == m.name and r["runtime"] == onnx_rt and r["batch_size"] == 1
            ),
            None,
        )
        for r in results:
            host_row = r.target == "host" and r.how == "native"
            out.append({"model": m.name, **r.to_dict(), "latency_ms": p50 if host_row else None})
    vs = (f"the --reference {reference['model']} on {reference['runtime']} (this machine)"
          if reference is not None else "the same model on ONNX Runtime on this machine (host)")  # fmt: skip
    note = (f"targets: each .onnx ran on {which} of {data.name}; agreement vs {vs}; emulated targets give "
            "numerics only, never a latency")  # fmt: skip
    return out, note


def _notes(plan: _Plan, doc: dict, opts: BenchOptions) -> list[str]:
    m, notes = plan.model, []
    if doc["compute"]["source"] != "ONNX graph":
        notes.append(f"{m.name}: compute from {doc['compute']['source']}")
    thop = doc["thop_check"]
    if "thop_macs" in thop:
        notes.append(
            f"{m.name}: thop counts {thop['thop_macs'] / 1e9:.4f} GMACs, the graph "
            f"{thop['graph_macs'] / 1e9:.4f} (graph/thop {thop['ratio_graph_over_thop']:.3f})"
        )
    if plan.pre_source.startswith("flags"):
        notes.append(f"{m.name}: preprocessing from {plan.pre_source}")
    if plan.classes_source and plan.classes_source.startswith("assumed"):
        notes.append(f"{m.name}: class names {plan.classes_source}")
    if opts.runtimes:
        can_run = model_kind(m.kind).runtimes
        skipped = [r for r in opts.runtimes if r not in m.runtimes and r not in can_run]
        if skipped:
            can = ", ".join(can_run)
            notes.append(f"{m.name}: not run on {', '.join(skipped)} ({m.kind} models run on {can})")
    return notes


def _precision_notes(rows: list[dict], opts: BenchOptions, env: dict) -> list[str]:
    """Say when OpenVINO's precision is not what was asked, or bf16 runs on a CPU without bf16 units."""
    ov = [r for r in rows if runtime_spec(r["runtime"]).takes_precision]
    notes = []
    for model in dict.fromkeys(r["model"] for r in ov):
        options = next(r for r in ov if r["model"] == model)["runtime_options"]["options"]
        eff = options["effective"]
        if opts.precision == "auto":
            if options.get("precision") == "default" and eff.get("precision") not in (None, "f32"):
                notes.append(
                    f"{model}: INT8 on OpenVINO at its default precision: its float layers run in "
                    f"{eff['precision']} (fastest here); --precision f32 pins them to f32"
                )
            continue
        if eff.get("precision") not in (None, opts.precision):
            notes.append(
                f"{model}: OpenVINO asked for {opts.precision}, the compiled model reports {eff['precision']}"
            )
    if ov and opts.precision == "bf16" and not native_bf16(set(env.get("isa_flags", []))):
        notes.append(
            "bf16 asked on a CPU without native bf16 (avx512_bf16/amx_bf16): these timings do not show "
            "bf16 hardware"
        )
    return notes


def _settings(opts: BenchOptions, args: list) -> dict[str, Any]:
    return {
        "runtimes": opts.runtimes,
        "per_model_runtimes": {str(p): r for p, r in args if r},
        "threads": opts.threads,
        "batch_sizes": opts.batch_sizes,
        "warmup": opts.warmup,
        "min_iters": opts.min_iters,
        "min_seconds": opts.min_seconds,
        "precision": opts.precision,
        "hint": opts.hint,
        "data": opts.data,
        "limit": opts.limit,
        "preprocessing_flags": asdict(opts.preprocessing),
        "reference": opts.reference,
        "gates": opts.gates,
        "opset": opts.opset,
        "targets": opts.targets or None,
        "target_images": opts.target_images if opts.targets else None,
        "devices": opts.devices or None,
        "device_images": opts.device_images if opts.devices else None,
        "max_top1_drop": opts.max_top1_drop,
    }
