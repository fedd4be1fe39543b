"""Files written whole or not at all: a temporary file in the same folder, then a rename.

A run killed mid-save, or a disk that fills, must never leave a half-written
run where a reader expects a whole one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto it when the block ends without error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only once it is complete."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding="utf-8") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


def write_text(path: Path, text: str) -> Path:
    """``Path.write_text``, atomically."""
    with atomic_open(path) as out:
        out.write(text)
    return Path(path)


def write_bytes(path: Path, data: bytes) -> Path:
    """``Path.write_bytes``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
