"""Decode and preprocess images in a thread pool, in input order, a bounded window ahead of the runtime.

PIL decoding and torch's resize release the GIL, so threads keep a CPU runtime fed without the start-up
and pickling costs of worker processes. The window bounds memory: results wait in order, never all at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
    array: np.ndarray | None  # float32 CHW, preprocessed as the model expects
    error: str | None
    seconds: float  # time this one image took to decode and preprocess (in its worker)


def image_decoder(pre: dict[str, Any]) -> Callable[[Input], Decoded]:
    """A function Input -> Decoded with the model's eval preprocessing (the one `edgepipe bench` uses)."""
    from PIL import Image

    from edgepipe.data.transforms import eval_transform
    from edgepipe.models.preprocessing import Preprocessing

    transform = eval_transform(Preprocessing.from_dict(pre))

    def decode(item: Input) -> Decoded:
        t0 = time.perf_counter()
        if item.error is not None:
            return Decoded(item, None, item.error, 0.0)
        try:
            with Image.open(item.path) as im:
                rgb = im.convert("RGB")  # forces the full decode: a truncated file fails here, not later
            array = transform(rgb).numpy().astype(np.float32, copy=False)
        except Exception as exc:  # noqa: BLE001 - any failure is that file's row, never the run's end
            first = (str(exc).splitlines() or [""])[0].replace(str(item.path), "<file>")[:160]
            return Decoded(item, None, f"unreadable image ({type(exc).__name__}: {first})", 0.0)
        return Decoded(item, array, None, time.perf_counter() - t0)

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
