"""`edgepipe predict`: top-k classes for every input, one row per input in input order, errors as rows.

The model is loaded exactly as `edgepipe bench` loads it (same loaders, same runtime settings, the
preprocessing and class names that travel with the model), so predict and bench agree on the same images.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgepipe.bench import accuracy as acc
from edgepipe.errors import BenchInputError, DataError, EdgepipeError
from edgepipe.predict.decode import BatchNormalizer, Decoded, image_loader, ordered_map
from edgepipe.predict.inputs import Input, expand_inputs

log = logging.getLogger(__name__)

SCHEMA = "edgepipe.predict/2"  # bumped whenever a key is renamed, removed or changes meaning


@dataclass
class PredictOptions:
    runtime: str | None = None  # None: the model's natural runtime (as `edgepipe bench`)
    batch_size: int = 32
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    workers: int = 2  # decode threads; 0 decodes inline
    top_k: int = 5
    preprocessing: acc.PreprocessingFlags = field(default_factory=acc.PreprocessingFlags)
    evaluate: bool = False  # inputs are one ImageFolder: score top-1/top-5/macro F1 on it
    precision: str = "auto"  # OpenVINO settings, as `edgepipe bench` defaults them (auto: fastest for INT8)
    hint: str = "LATENCY"


@dataclass
class Row:
    path: str
    top: list[tuple[str, float]]  # (label, probability), best first; empty when error
    error: str | None = None


@dataclass
class PredictResult:
    model: str
    runtime: dict[str, Any]
    preprocessing_source: str
    classes: list[str]
    top_k: int
    rows: list[Row]
    timing: dict[str, float]
    evaluation: dict[str, Any] | None = None

    @property
    def errors(self) -> list[Row]:
        return [r for r in self.rows if r.error is not None]

    def summary(self) -> str:
        t, n = self.timing, len(self.rows)
        line = (
            f"{n} inputs, {n} rows (one per input, in input order); {n - len(self.errors)} predicted, "
            f"{len(self.errors)} unreadable; {t['images_per_s']:.1f} images/s on {self.runtime['runtime']} "
            f"(decode {t['decode_s']:.2f} s in workers, waited for it {t['decode_wait_s']:.2f} s; "
            f"normalise {t['normalize_s']:.2f} s; inference {t['infer_s']:.2f} s)"
        )
        if self.evaluation:
            e = self.evaluation
            line += (
                f"\neval on {e['data']} ({e['images']} images, {len(e['classes'])} classes): top-1 "
                f"{e['top1']:.2f} %, top-5 {e['top5']:.2f} %, macro F1 {e['macro_f1']:.2f} %"
            )
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "runtime": self.runtime,
            "preprocessing_source": self.preprocessing_source,
            "top_k": self.top_k,
            "inputs": len(self.rows),
            "errors": len(self.errors),
            "timing": self.timing,
            "evaluation": self.evaluation,
            "rows": [
                {"path": r.path, "top": [{"label": c, "prob": p} for c, p in r.top], "error": r.error}
                for r in self.rows
            ],
        }


def _check(opts: PredictOptions) -> None:
    problems = [
        (opts.batch_size < 1, f"--batch-size {opts.batch_size} must be >= 1", "pass --batch-size 1 or more"),
        (opts.threads < 1, f"--threads {opts.threads} must be >= 1", "pass --threads 1 or more"),
        (opts.workers < 0, f"--workers {opts.workers} must be >= 0", "pass --workers 0 (inline) or more"),
        (opts.top_k < 1, f"--top-k {opts.top_k} must be >= 1", "pass --top-k 1 or more"),
    ]
    for bad, what, fix in problems:
        if bad:
            raise BenchInputError(f"{what}; fix: {fix}")


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Softmax of logits; outputs that already are probabilities (rows >= 0 summing to 1) pass through."""
    out = outputs.astype(np.float64)
    if out.size and (out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=1e-3):
        return out
    z = np.exp(out - out.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def predict(model_path: Path, inputs: list[str | Path], opts: PredictOptions) -> PredictResult:
    """Run a model on every input; unreadable inputs become rows with their error and the run goes on."""
    from edgepipe.bench.loading import build_runtime, check_runtimes_installed, load_model, select_runtimes

    _check(opts)
    items = expand_inputs(inputs)
    labelled = _imagefolder_labels(inputs, items) if opts.evaluate else None
    with tempfile.TemporaryDirectory(prefix="edgepipe-predict-") as tmp:
        model = load_model(Path(model_path), Path(model_path).name, Path(tmp))
        model.runtimes = select_runtimes(model, [opts.runtime] if opts.runtime else None, None)
        check_runtimes_installed(set(model.runtimes))
        pre, pre_source = acc.resolve_preprocessing(model, opts.preprocessing, need=True)
        acc.check_input(model, [int(d) for d in pre["input_size"]])
        batch = _batch_size(model.input_shape, opts.batch_size)
        rt = build_runtime(model, model.runtimes[0], opts.threads, opts.precision, opts.hint)
        rows, logits, timing = _run(rt, items, pre, batch, fixed=model.input_shape[0] is not None, opts=opts)
    names = _names(model, opts.preprocessing, logits.shape[1])
    probs = probabilities(logits)
    k = min(opts.top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    ok = [i for i, r in enumerate(rows) if r.error is None]
    for j, i in enumerate(ok):
        rows[i].top = [(names[c], float(probs[j, c])) for c in top[j]]
    if len(rows) != len(items) or any(r.path != it.shown for r, it in zip(rows, items, strict=True)):
        raise EdgepipeError(  # an internal fault, never the user's: say it rather than write a wrong file
            f"predict produced {len(rows)} rows for {len(items)} inputs or out of order; fix: report this bug"
        )
    result = PredictResult(
        model=str(model_path),
        runtime=rt.describe(),
        preprocessing_source=pre_source,
        classes=names,
        top_k=k,
        rows=rows,
        timing=timing,
    )
    if labelled is not None:
        result.evaluation = _evaluate(model, opts, labelled, rows, logits)
    return result


def _batch_size(input_shape, asked: int) -> int:
    fixed = input_shape[0] if input_shape else None
    if fixed is not None and fixed != asked:
        log.warning("the model takes a fixed batch of %d; predicting in batches of %d, not %d", fixed, fixed,
                    asked)
        return int(fixed)
    return asked


def _run(rt, items: list[Input], pre: dict, batch: int, fixed: bool, opts: PredictOptions):
    from edgepipe.progress import track
    from edgepipe.runtimes.predict import padded_logits

    stream = ordered_map(image_loader(pre), items, opts.workers, window=max(2 * batch, 4 * opts.workers))
    normalize = BatchNormalizer(pre)  # one float32 batch buffer, refilled for every batch
    rows: list[Row] = []
    outs: list[np.ndarray] = []
    pending: list[Decoded] = []
    timing = {"decode_s": 0.0, "decode_wait_s": 0.0, "normalize_s": 0.0, "infer_s": 0.0}

    def flush() -> None:
        t0 = time.perf_counter()
        x = normalize([d.array for d in pending])  # type: ignore[misc]
        t1 = time.perf_counter()
        outs.append(padded_logits(rt, x, batch if fixed else None))
        timing["normalize_s"] += t1 - t0
        timing["infer_s"] += time.perf_counter() - t1
        pending.clear()

    start = time.perf_counter()
    it = iter(track(stream, "predict", total=len(items)))
    while True:
        t0 = time.perf_counter()
        d = next(it, None)
        timing["decode_wait_s"] += time.perf_counter() - t0
        if d is None:
            break
        timing["decode_s"] += d.seconds
        rows.append(Row(d.item.shown, [], d.error))
        if d.error is not None:
            log.warning("%s: %s", d.item.shown, d.error)
            continue
        pending.append(d)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    wall = time.perf_counter() - start
    logits = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    ok = len(rows) - sum(r.error is not None for r in rows)
    timing = {
        **{k: round(v, 4) for k, v in timing.items()},
        "wall_s": round(wall, 4),
        "images": ok,
        "images_per_s": ok / wall if wall > 0 else 0.0,
        "batch_size": batch,
        "threads": opts.threads,
        "workers": opts.workers,
    }
    if not outs:
        raise DataError(
            f"none of the {len(items)} inputs could be read as an image (first: {items[0].shown}: "
            f"{rows[0].error}); fix: give image files"
        )
    return rows, logits, timing


def _names(model, flags: acc.PreprocessingFlags, outputs: int) -> list[str]:
    """A label per output: the model's class names, else --classes, else ``#i``."""
    names = model.meta.get("classes")
    if names and flags.classes:
        log.warning("%s carries its own class names; --classes not applied to it", model.name)
    names = names or flags.classes
    if names is None:
        log.warning("%s has no class names; labels are output indices #i (fix: --classes)", model.name)
        return [f"#{i}" for i in range(outputs)]
    if len(names) != outputs:
        raise BenchInputError(
            f"{model.name} has {outputs} outputs but {len(names)} class names; fix: give exactly one class "
            "name per output"
        )
    return list(names)


@dataclass
class _Labelled:
    data: acc.EvalData
    label_of: dict[str, int]  # row path -> dataset class index


def _imagefolder_labels(inputs: list[str | Path], items: list[Input]) -> _Labelled:
    """--eval: the one input is an ImageFolder; each image's label is its top-level sub-folder."""
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise DataError(
            "--eval needs exactly one input folder laid out as an ImageFolder; fix: pass one folder with "
            "one sub-folder of images per class"
        )
    root = Path(inputs[0])
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"--eval: {root} has {len(classes)} class folder(s); fix: put each class's images in its own "
            "sub-folder (at least two)"
        )
    index = {c: i for i, c in enumerate(classes)}
    label_of = {}
    for it in items:
        rel = it.path.relative_to(root)
        if len(rel.parts) > 1 and rel.parts[0] in index:
            label_of[it.shown] = index[rel.parts[0]]
    samples = [(it.shown, label_of[it.shown]) for it in items if it.shown in label_of]
    data = acc.EvalData(str(root), "ImageFolder, predicted images", None, samples, classes, len(samples))
    return _Labelled(data, label_of)


def _evaluate(model, opts: PredictOptions, lab: _Labelled, rows: list[Row], logits: np.ndarray) -> dict:
    """Scored exactly as `edgepipe bench --data FOLDER` scores: its class matching and its metric function."""
    ok = [r for r in rows if r.error is None]
    keep = [j for j, r in enumerate(ok) if r.path in lab.label_of]
    labels = np.asarray([lab.label_of[ok[j].path] for j in keep], dtype=np.int64)
    names, _ = acc.resolve_classes(model, opts.preprocessing, lab.data)
    names = acc.output_names(model.name, names, lab.data, int(logits.shape[1]))
    scores = acc.score(logits[keep], labels, lab.data, names)
    unscored = len(rows) - len(keep)
    if unscored:
        log.info("--eval: %d input(s) not scored (unreadable, or not inside a class folder)", unscored)
    return {"data": lab.data.name, "classes": lab.data.classes, "unscored": unscored, **scores}


def write_csv(result: PredictResult, fh: IO[str]) -> None:
    """path, label_1, prob_1, ... label_k, prob_k, error: one row per input, in input order."""
    k = result.top_k
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["path", *[f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "prob")], "error"])
    for r in result.rows:
        cells: list[str] = []
        for i in range(k):
            cells += [r.top[i][0], f"{r.top[i][1]:.6f}"] if i < len(r.top) else ["", ""]
        w.writerow([r.path, *cells, r.error or ""])
