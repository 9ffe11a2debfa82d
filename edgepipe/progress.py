"""Progress bars for long loops (rich); quiet when stderr is not a terminal, EDGEPIPE_PROGRESS=0, or on a
torchrun rank other than 0 (N bars redrawing one terminal is noise)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    if os.environ.get("RANK", "0") != "0":
        return False
    return os.environ.get("EDGEPIPE_PROGRESS", "1") != "0" and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not enabled():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)
