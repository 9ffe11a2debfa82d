"""What `edgepipe predict` reads: files, folders (recursive, sorted) and text lists of paths, in order.

Every input becomes exactly one row later, so expansion never drops a named thing: a missing path or a
list line naming nothing is kept as an input with its error. Only folder walks filter, by image extension.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgepipe.data.sources import IMAGE_EXTENSIONS
from edgepipe.errors import DataError

log = logging.getLogger(__name__)

LIST_SUFFIX = ".txt"


@dataclass(frozen=True)
class Input:
    shown: str  # the path as the user wrote it (or as found under a folder): the CSV's `path` column
    path: Path  # where it is read from
    error: str | None = None  # known before decoding (not found, not a file)


def expand_inputs(args: list[str | Path]) -> list[Input]:
    """Files as given, folders walked recursively in sorted order, ``.txt`` files read as lists of paths."""
    out: list[Input] = []
    for arg in args:
        out += _expand(str(arg), Path(arg), from_list=False)
    if not out:
        raise DataError(
            f"no images found in {', '.join(map(str, args)) or 'the inputs'}; fix: give image files, "
            f"folders holding {'/'.join(IMAGE_EXTENSIONS[:3])}... files, or a .txt list of paths"
        )
    return out


def _expand(shown: str, path: Path, from_list: bool) -> list[Input]:
    if path.is_dir():
        return _walk(shown, path)
    if path.is_file() and path.suffix.lower() == LIST_SUFFIX and not from_list:
        return _read_list(path)
    if not path.exists():
        return [Input(shown, path, "file not found")]
    if not path.is_file():
        return [Input(shown, path, "not a regular file")]
    return [Input(shown, path)]


def _walk(shown: str, root: Path) -> list[Input]:
    found, skipped = [], 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped += 1
            continue
        found.append(Input(str(Path(shown) / rel), p))
    if skipped:
        log.info("%s: %d file(s) without an image extension not read", shown, skipped)
    return found


def _read_list(path: Path) -> list[Input]:
    """One path per line (blank lines and # comments skipped); relative paths are from the list's folder."""
    out: list[Input] = []
    for line in path.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry).expanduser()
        out += _expand(entry, p if p.is_absolute() else path.parent / p, from_list=True)
    return out
