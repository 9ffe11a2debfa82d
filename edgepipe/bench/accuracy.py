"""Accuracy through a runtime: each model sees the data with its own preprocessing and class names.

Preprocessing and class names come from the model (ONNX metadata_props, IR rt_info, checkpoint) so nobody
retypes mean/std; flags (--image-size/--mean/--std/--classes) fill in only for foreign models without them.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.bench.loading import BenchModel
from edgepipe.errors import BenchInputError, ModelError
from edgepipe.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

_CACHE_BYTES = 1 << 30  # preprocessed images kept in memory up to this size, else decoded per runtime


@dataclass
class PreprocessingFlags:
    """Preprocessing for foreign models (no edgepipe metadata); a model's own metadata always wins."""

    image_size: int | None = None
    resize: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    classes: list[str] | None = None

    def given(self) -> list[str]:
        return [f"--{f.name.replace('_', '-')}" for f in fields(self) if getattr(self, f.name) is not None]

    @classmethod
    def from_cli(
        cls,
        image_size: int | None,
        resize: int | None,
        mean: str | None,
        std: str | None,
        classes: str | None,
    ) -> PreprocessingFlags:
        """From the command line's text: ``--mean r,g,b``, ``--std r,g,b``, ``--classes a,b,c|FILE``."""
        return cls(image_size, resize, parse_floats(mean, "--mean"), parse_floats(std, "--std"),
                   parse_classes(classes))


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise BenchInputError(
            f"{flag} '{text}' is not three numbers; fix: write e.g. {flag} 0.485,0.456,0.406"
        )
    return values


def parse_classes(text: str | None) -> list[str] | None:
    """``a,b,c`` or the path of a text file with one class name per line (e.g. ImageNet's 1000)."""
    if text is None:
        return None
    path = Path(text)
    names = path.read_text().splitlines() if path.is_file() else text.split(",")
    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise BenchInputError(
            f"--classes '{text[:60]}' must name at least two distinct classes; fix: write a,b,c or give a "
            "file with one class name per line"
        )
    return names


@dataclass
class EvalData:
    name: str
    kind: str
    source: Any
    samples: list[tuple[str, int]]
    classes: list[str]
    available: int

    def describe(self) -> dict[str, Any]:
        return {
            "data": self.name,
            "kind": self.kind,
            "classes": self.classes,
            "images": len(self.samples),
            "available_images": self.available,
        }


def open_data(spec: str, limit: int | None = None, seed: int = 0) -> EvalData:
    """A built-in dataset's test split, or every image of an ImageFolder; ``limit`` subsamples (seeded)."""
    from edgepipe.data.sources import BUILTINS, open_source

    if spec in BUILTINS:
        source, kind = open_source(spec, None), "built-in dataset, test split"
        listing = source.listing()
        samples = listing.samples.get("test", listing.samples.get("all", []))
    elif Path(spec).is_dir():
        source, kind = open_source(None, Path(spec)), "ImageFolder, all images"
        listing = source.listing()
        samples = listing.samples["all"]
    else:
        raise BenchInputError(
            f"--data {spec} is neither a built-in dataset ({', '.join(sorted(BUILTINS))}) nor a folder; "
            "fix: give a built-in name or an ImageFolder path (one sub-folder per class)"
        )
    available = len(samples)
    if limit is not None:
        if limit < 1:
            raise BenchInputError(f"--limit {limit} must be >= 1; fix: pass a positive number of images")
        keep = sorted(random.Random(seed).sample(range(available), min(limit, available)))
        samples = [samples[i] for i in keep]
    return EvalData(spec, kind, source, list(samples), list(listing.classes), available)


def resolve_preprocessing(
    model: BenchModel, flags: PreprocessingFlags, need: bool
) -> tuple[dict | None, str]:
    """The model's own preprocessing, else one built from the flags; None only when no data is read."""
    own = model.meta.get("preprocessing")
    if own:
        try:
            Preprocessing.from_dict(own)
        except ModelError as exc:
            raise BenchInputError(f"{model.name}: {exc}") from None
        pre_flags = [f for f in flags.given() if f != "--classes"]
        if pre_flags:
            log.warning(
                "%s carries its own preprocessing; %s not applied to it", model.name, "/".join(pre_flags)
            )
        return own, str(model.meta_source)
    if flags.image_size is not None:
        size = flags.image_size
        if size < 1 or (flags.resize is not None and flags.resize < size):
            raise BenchInputError(
                f"--image-size {size} / --resize {flags.resize}: need size >= 1 and resize >= size; fix: "
                "e.g. --image-size 224 --resize 256"
            )
        defaulted = flags.mean is None or flags.std is None
        if defaulted and need:
            log.warning("%s: --mean/--std not given; using ImageNet's", model.name)
        pre = Preprocessing.make(size, resize=flags.resize, mean=flags.mean, std=flags.std).to_dict()
        return pre, "flags" + (" (ImageNet mean/std by default)" if defaulted else "")
    if need:
        raise BenchInputError(
            f"{model.name} has no edgepipe metadata, so its preprocessing is unknown; fix: pass --image-size "
            "(and --mean/--std/--classes) for it"
        )
    return None, "none (latency only)"


def input_size(model: BenchModel, pre: dict | None) -> list[int]:
    """C, H, W fed to the model: its preprocessing's, else its own fixed input dims."""
    if pre is not None:
        size = [int(d) for d in pre["input_size"]]
        check_input(model, size)
        return size
    dims = model.input_shape
    if len(dims) != 4 or any(d is None for d in dims[1:]):
        raise BenchInputError(
            f"{model.name} has input {_shown(dims)} with dynamic image dims and no metadata; fix: pass "
            "--image-size"
        )
    return [int(d) for d in dims[1:]]  # type: ignore[arg-type]


def check_input(model: BenchModel, size: list[int]) -> None:
    """The model's declared input must take NCHW batches of ``size``; say which dim is off and why."""
    dims = model.input_shape
    if len(dims) != 4:
        raise BenchInputError(
            f"{model.name} takes a {len(dims)}-d input {_shown(dims)}, not an image batch; fix: bench a "
            "classifier with one NCHW input (batch, 3, H, W)"
        )
    if all(d is None or d == s for d, s in zip(dims[1:], size, strict=True)):
        return
    if dims[3] == size[0] and dims[1] != size[0]:
        raise BenchInputError(
            f"{model.name} expects channels-last (NHWC) input {_shown(dims)}, but edgepipe feeds NCHW "
            f"{_shown((None, *size))}; fix: export the model with an NCHW input, as torch.onnx.export does"
        )
    raise BenchInputError(
        f"{model.name} expects input {_shown(dims)} but the data is prepared as {_shown((None, *size))}; "
        f"fix: pass --image-size {dims[2] or '?'} (or its own size) so data and model agree"
    )


def _shown(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def resolve_classes(
    model: BenchModel, flags: PreprocessingFlags, data: EvalData
) -> tuple[list[str] | None, str]:
    """The model's class names (metadata, else --classes); every dataset class must be among them."""
    names, source = model.meta.get("classes"), str(model.meta_source)
    if names and flags.classes:
        log.warning("%s carries its own class names; --classes not applied to it", model.name)
    if not names and flags.classes:
        names, source = flags.classes, "--classes"
    if not names:
        log.warning(
            "%s has no class names; assuming output i is dataset class i (fix: --classes)", model.name
        )
        return None, "assumed: output i is dataset class i (the model carries no class names)"
    missing = [c for c in data.classes if c not in set(names)]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BenchInputError(
            f"{data.name} has class(es) {', '.join(missing[:5])}{more} that {model.name} lacks (it knows "
            f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); fix: bench on data with the "
            "model's classes, or pass --classes for a model without metadata"
        )
    return list(names), source


def output_names(model_name: str, names: list[str] | None, data: EvalData, outputs: int) -> list[str]:
    """A name per logit: its class, or for assumed models the dataset's classes then ``#i``."""
    if names is None:
        if outputs < len(data.classes):
            raise BenchInputError(
                f"{model_name} has {outputs} outputs but {data.name} has {len(data.classes)} classes; fix: "
                "bench it on data with at most that many classes"
            )
        return data.classes + [f"#{i}" for i in range(len(data.classes), outputs)]
    if len(names) != outputs:
        raise BenchInputError(
            f"{model_name} has {outputs} outputs but {len(names)} class names; fix: give exactly one "
            "class name per output"
        )
    return names


class Images:
    """Decoded, preprocessed images per preprocessing; small sets stay in memory across runtimes."""

    def __init__(self, data: EvalData, cache_bytes: int = _CACHE_BYTES):
        self.data, self.cache_bytes = data, cache_bytes
        self._cache: dict[str, np.ndarray] = {}
        self.labels = np.asarray([y for _, y in data.samples], dtype=np.int64)

    def batches(self, pre: dict, batch: int) -> Iterator[np.ndarray]:
        key = json.dumps(pre, sort_keys=True)
        n = len(self.data.samples)
        if key not in self._cache and 4 * n * math.prod(pre["input_size"]) <= self.cache_bytes:
            self._cache[key] = np.concatenate(list(self._decode(pre, 256))) if n else np.zeros((0, 0))
        if key in self._cache:
            arr = self._cache[key]
            for i in range(0, n, batch):
                yield arr[i : i + batch]
        else:
            yield from self._decode(pre, batch)

    def _decode(self, pre: dict, batch: int) -> Iterator[np.ndarray]:
        from edgepipe.data.transforms import eval_transform
        from edgepipe.progress import track

        tf, buf = eval_transform(Preprocessing.from_dict(pre)), []
        for ref, _ in track(self.data.samples, f"images at {pre['input_size']}"):
            buf.append(tf(self.data.source.load(ref)).numpy())
            if len(buf) == batch:
                yield np.stack(buf).astype(np.float32)
                buf = []
        if buf:
            yield np.stack(buf).astype(np.float32)


def predict(rt, images: Images, pre: dict, batch: int, fixed_batch: bool) -> np.ndarray:
    """Logits for every image; a fixed-batch model gets its last batch zero-padded, padding dropped."""
    from edgepipe.runtimes.predict import batch_logits

    return batch_logits(rt, images.batches(pre, batch), batch if fixed_batch else None)


def score(logits: np.ndarray, labels: np.ndarray, data: EvalData, names: list[str]) -> dict[str, Any]:
    """Scores with the model's own class order: dataset labels are mapped to the model's outputs first."""
    index = {n: i for i, n in enumerate(names)}
    return score_logits(logits, np.asarray([index[data.classes[y]] for y in labels]))


def score_logits(logits: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Top-1/top-5 % and macro F1 % (train.metrics.macro_f1; ``target``: indices into the logits)."""
    from edgepipe.train.metrics import macro_f1

    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return {
        "top1": 100.0 * float((pred == target).mean()),
        "top5": 100.0 * float((top == target[:, None]).any(1).mean()),
        "macro_f1": macro_f1(target, pred) if len(target) else None,
        "images": int(len(target)),
        "distinct_predictions": int(len(np.unique(pred))),
    }


def predicted_names(logits: np.ndarray, names: list[str]) -> np.ndarray:
    return np.asarray(names, dtype=object)[logits.argmax(1)]
