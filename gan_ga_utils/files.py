"""Writing files so that a failure never leaves half a file, and hashing them.

Every file gan-ga writes that a later step reads (checkpoints, exports, caches, reports, PNGs) goes
through :func:`atomic_write`: it is written beside its destination under a unique temporary name,
flushed to disk and renamed over the destination. A kill or an exception during the write leaves the
previous file (if any) whole and no temporary file behind. This module imports nothing from gan-ga.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """``with atomic_write(path) as tmp: <write tmp>``: ``tmp`` replaces ``path`` only when the block
    ends without an exception. The parent folder is created. Several processes may write the same
    path at once: each has its own temporary file and the last rename wins, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically (UTF-8)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
