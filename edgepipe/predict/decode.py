"""Decode and preprocess images in a thread pool, in input order, a bounded window ahead of the runtime.

PIL decoding and torch's uint8 resize release the GIL, so threads keep a CPU runtime fed without the start-up
and pickling costs of worker processes. Workers stop at the uint8 crop; the float scaling and normalisation
run once per batch in numpy, into a reused buffer (BatchNormalizer): as torch ops per image they ran on
torch's intra-op thread team from every worker, which on a shared 2-core machine cost ~15 ms of CPU per
224-pixel image against ~2 ms for the rest of the decode (benchmarks/predict_throughput.py). The window
bounds memory: results wait in order, never all at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgepipe.predict.inputs import Input

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Decoded:
    item: Input
    array: np.ndarray | None  # CHW: uint8 from image_loader, float32 (preprocessed) from image_decoder
    error: str | None
    seconds: float  # time this one image took to decode and preprocess (in its worker)


class BatchNormalizer:
    """eval_transform's last two steps, ToDtype(float32, scale=True) then Normalize, on a whole batch of
    uint8 crops: the same float32 operations in the same order (x * float32(1/255), - mean, / std), so the
    result is bit-identical to eval_transform's (tests/predict/test_predict_decode.py)."""

    def __init__(self, pre: dict[str, Any]):
        self.scale = np.float32(1.0 / 255.0)
        self.mean = np.asarray(pre["mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(pre["std"], np.float32).reshape(1, -1, 1, 1)
        self._buf: np.ndarray | None = None

    def __call__(self, crops: Sequence[np.ndarray], reuse: bool = True) -> np.ndarray:
        """float32 NCHW of the uint8 CHW ``crops``; ``reuse``: into a buffer the next call overwrites."""
        n, shape = len(crops), (len(crops), *crops[0].shape)
        if reuse and (self._buf is None or self._buf.shape[1:] != shape[1:] or len(self._buf) < n):
            self._buf = np.empty(shape, np.float32)
        out = self._buf[:n] if reuse else np.empty(shape, np.float32)  # type: ignore[index]
        for i, c in enumerate(crops):
            np.multiply(c, self.scale, out=out[i])
        np.subtract(out, self.mean, out=out)
        np.divide(out, self.std, out=out)
        return out


def image_loader(pre: dict[str, Any]) -> Callable[[Input], Decoded]:
    """Input -> Decoded holding the uint8 CHW crop of the model's eval preprocessing (the one `edgepipe bench`
    uses), ready for BatchNormalizer; a file that cannot be read becomes a Decoded with its error."""
    from PIL import Image

    from edgepipe.data.transforms import eval_geometry
    from edgepipe.models.preprocessing import Preprocessing

    geometry = eval_geometry(Preprocessing.from_dict(pre))

    def load(item: Input) -> Decoded:
        t0 = time.perf_counter()
        if item.error is not None:
            return Decoded(item, None, item.error, 0.0)
        try:
            with Image.open(item.path) as im:
                rgb = im.convert("RGB")  # forces the full decode: a truncated file fails here, not later
            array = np.ascontiguousarray(geometry(rgb).numpy())
        except Exception as exc:  # noqa: BLE001 - any failure is that file's row, never the run's end
            first = (str(exc).splitlines() or [""])[0].replace(str(item.path), "<file>")[:160]
            return Decoded(item, None, f"unreadable image ({type(exc).__name__}: {first})", 0.0)
        return Decoded(item, array, None, time.perf_counter() - t0)

    return load


def image_decoder(pre: dict[str, Any]) -> Callable[[Input], Decoded]:
    """Input -> Decoded holding the float32 CHW array the model takes (image_loader + BatchNormalizer)."""
    load, normalize = image_loader(pre), BatchNormalizer(pre)

    def decode(item: Input) -> Decoded:
        d = load(item)
        if d.array is not None:
            d.array = normalize([d.array], reuse=False)[0]
        return d

    return decode


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads (0: inline), at most ``window`` results ahead, in order."""
    if workers <= 0:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgepipe-decode") as pool:
        pending = deque(pool.submit(fn, x) for _, x in zip(range(max(1, window)), it, strict=False))
        try:
            while pending:
                done = pending.popleft()
                for x in it:  # refill one: the window stays full while there is input
                    pending.append(pool.submit(fn, x))
                    break
                yield done.result()
        finally:
            for f in pending:  # stopped early (an error downstream): drop queued work, do not wait for it
                f.cancel()
