"""Crash-safe file writes: a fsynced temp file in the same folder, then ``os.replace``.

The file gets the mode a plain ``open`` would give it (``0o666`` less the umask), not the temp file's ``0o600``: a
registry written by one user (a host's ``train_lstm``) stays readable by the service's.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def process_umask() -> int:
    """The process's umask: read from /proc/self/status where Linux shows it, else set and restored (process-wide,
    so only at import, before any thread writes)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~process_umask()
"""The mode of every file written here (the umask as the process started)."""
DIR_MODE = 0o777 & ~process_umask()
"""The mode a plain ``mkdir`` gives a folder (for one copied from a private temporary folder)."""


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be fsynced."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # e.g. Windows cannot open or fsync directories
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temp file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # closes the descriptor whatever fails below
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp file beside ``path`` by its name (a CSV writer, a plot), fsync it, then
    ``os.replace`` it into place: never a half-written file. The folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, paths, tuples and sets; NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # numpy scalar or array
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def atomic_write_json(path: Path, obj: Any, *, compact: bool = False) -> None:
    """Atomically write ``obj`` (a pydantic model or JSON-able value) as indented JSON (`compact`: on one line, for
    files only programs read: indenting a long list of numbers puts each on a line of its own, ~8x the bytes)."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else to_jsonable(obj)
    text = json.dumps(data, separators=(",", ":"), allow_nan=False) if compact else json.dumps(data, indent=2,
                                                                                               allow_nan=False)
    atomic_write_text(path, text + "\n")
