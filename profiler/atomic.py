"""Files written whole or not at all: the data goes to a file with no name in the target's
folder (O_TMPFILE), which gets a temporary name and is renamed onto the target only once
complete.

A run killed mid-save, or a disk that fills, must never leave a half-written run where
a reader expects a whole one, nor a temporary file behind: until the last microseconds
the file has no name, so even a SIGKILL leaves nothing (the kernel frees it). Ctrl-C,
SIGTERM and SIGHUP wait until the file is in place. Where the folder's file system has
no O_TMPFILE, a named temporary file is used instead (removed on any error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from profiler import phases

MODE = 0o644
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _sync(fd: int) -> None:
    """Make a rename durable (best effort: some file systems refuse a folder fsync)."""
    with contextlib.suppress(OSError):
        os.fsync(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A path to write the data to; it appears at ``path`` when the block ends without error."""
    path = Path(path)
    with phases.uninterrupted():
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, MODE, dir_fd=folder)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                with _named(path) as tmp:
                    yield tmp
                return
            with _unnamed(path, folder, fd) as tmp:
                yield tmp
        finally:
            os.close(folder)


@contextlib.contextmanager
def _unnamed(path: Path, folder: int, fd: int) -> Iterator[Path]:
    """The data in a file of no name in ``folder``, named only to be renamed onto path."""
    named = _temporary_name(path).name
    try:
        os.fchmod(fd, MODE)
        yield Path(f"/proc/self/fd/{fd}")
        os.fsync(fd)
        phases.checkpoint()
        # linkat(AT_SYMLINK_FOLLOW) through /proc: a dir_fd makes os.link use linkat
        os.link(f"/proc/self/fd/{fd}", named, dst_dir_fd=folder, follow_symlinks=True)
        os.replace(named, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        _sync(folder)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(named, dir_fd=folder)


@contextlib.contextmanager
def _named(path: Path) -> Iterator[Path]:
    """The fallback: a named temporary file beside ``path``, removed on any error."""
    tmp = _temporary_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE))
    try:
        yield tmp
        os.chmod(tmp, MODE)
        phases.checkpoint()
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
