"""Run folders, manifests, content hashes, atomic writes and cache hits.

A stage writes into a hidden temporary folder; only when it has finished (its manifest.json written) is that
folder renamed to ``<run>/<stage>``. A killed run therefore never leaves a half-written stage behind, and the
previous complete result stays in place until the new one is ready. One build at a time holds a run folder
(``run_lock``); the hidden folders a killed build left are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError, RunFolderBusy

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK, HOLDER = ".build.lock", ".build.lock.json"
_VERSIONED = ("edgepipe", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "numpy")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise EdgepipeError(f"cannot write a {type(o).__name__} to JSON; this is a bug in edgepipe")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def atomic_write_text(path: Path, text: str) -> Path:
    """Write via a temporary file in the same folder and os.replace, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to (by any library); it becomes ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_manifest(stage_dir: Path) -> dict | None:
    try:
        return json.loads((Path(stage_dir) / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class StageResult:
    """What a stage hands on: output files (relative to its folder) and metrics for the report."""

    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``final`` that replaces it on success and is removed on failure."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(\d+)$")


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove what killed builds left in a run folder: ``.STAGE.tmp-PID`` / ``.STAGE.old-PID`` folders
    (staging_dir) and ``.FILE.tmp-PID`` files (atomic_path).

    Only those of dead processes go (and this process's own, which it is not using: it holds the run lock);
    a recycled PID keeps its leftovers until a later build, which is harmless.
    """
    removed = []
    for path in Path(run_dir).iterdir() if Path(run_dir).is_dir() else ():
        m = _LEFTOVER.match(path.name)
        if m and (int(m.group(2)) == os.getpid() or not _alive(int(m.group(2)))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of killed builds in %s", len(removed), run_dir)
    return removed


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / HOLDER).read_text())
        return f"pid {h['pid']} on {h['host']}, started {h['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for one build: a second build into it is refused in one line naming the holder.

    The lock is the OS's (flock, through filelock): it dies with its process, so a killed build never blocks
    the next one. Who holds it is written beside it, since filelock's own file is truncated by each opener.
    """
    from datetime import datetime, timezone

    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusy(
            f"run folder {run_dir} is in use by another edgepipe build ({_holder(run_dir)}); fix: wait "
            "for it to finish, or give this build another --out"
        ) from None
    try:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "argv": sys.argv}
        atomic_write_json(run_dir / HOLDER, holder)
        remove_leftovers(run_dir)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / HOLDER).unlink()
        lock.release()
