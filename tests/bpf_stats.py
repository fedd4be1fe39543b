"""Kernel BPF run statistics for tests (a test helper).

``enabled()`` turns the kernel's per-program run counts on through a BPF_ENABLE_STATS
file descriptor, held for the block: the kernel counts while any such fd (or
``kernel.bpf_stats_enabled``) is on, so a test never flips the sysctl under another
tracer's feet. ``run_counts`` reads each program's run_cnt (hook events).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Iterator

from profiler.libbpf import Program

BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type
_lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
_lib.bpf_enable_stats.restype = ctypes.c_int
_lib.bpf_enable_stats.argtypes = [ctypes.c_int]


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    fd = _lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        err = ctypes.get_errno() or -fd
        raise OSError(err, f"bpf_enable_stats: {os.strerror(err)}")
    try:
        yield
    finally:
        os.close(fd)


def run_counts(programs: Iterable[Program]) -> dict[str, int]:
    """Each program's runs so far (counted only while stats are enabled)."""
    return {p.name: int(p.info().run_cnt) for p in programs}


def events(before: dict[str, int], after: dict[str, int]) -> int:
    """Hook events between two readings, all programs together."""
    return sum(after[name] - before[name] for name in after)
