"""Atomic file writes: a crash or a full disk never leaves a half-written checkpoint or result file.

Each writer writes into a temporary file in the target's own folder (same file system), flushes and
fsyncs it, then ``os.replace``-s it over the target, which POSIX guarantees to be atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def _atomic_handle(path: Path, mode: str) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with _atomic_handle(Path(path), "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_handle(Path(path), "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN is rejected: use None)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    with _atomic_handle(Path(path), "wb") as handle:
        torch.save(obj, handle)


def atomic_write_with(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a binary temporary file, then move it over ``path`` atomically."""
    with _atomic_handle(Path(path), "wb") as handle:
        write(handle)
