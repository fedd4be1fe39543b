"""Fixtures for the guest tests: the prepared kernel, and BPF objects built on the host."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .vm import HERE, GuestConfig, ensure_guest


@pytest.fixture(scope="session")
def guest_config() -> GuestConfig:
    """Runs fetch_kernel.sh (idempotent; ~1 s when cached) and fails loudly if it cannot."""
    return ensure_guest()


@contextlib.contextmanager
def guest_outdir(name: str) -> Iterator[Path]:
    """A folder the guest can write to (under /tmp, visible through 9p), removed after."""
    outdir = Path(tempfile.mkdtemp(prefix=f"stackprof-guest-{name}-", dir="/tmp"))
    try:
        yield outdir
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def make_bpf_object(name: str) -> None:
    """Build one of bpf/'s objects as its source now is: the guest loads what the host built."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(HERE.parent.parent / "bpf"), f".output/{name}.bpf.o"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"make {name}.bpf.o failed:\n{proc.stdout}{proc.stderr}")


def build_probe(outdir: Path) -> tuple[Path, Path]:
    """Build probe.bpf.c and its libbpf loader, probe_loader.c, with the host's clang."""
    clang = shutil.which("clang")
    if clang is None:
        pytest.fail("clang not found: run setup.sh")
    multiarch = subprocess.run(
        [clang, "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    obj, loader = outdir / "probe.bpf.o", outdir / "probe_loader"
    commands = [
        [clang, "-g", "-O2", "-Wall", "-Werror", "-target", "bpf"]
        + [f"-I/usr/include/{multiarch or 'x86_64-linux-gnu'}"]
        + ["-c", str(HERE / "probe.bpf.c"), "-o", str(obj)],
        [clang, "-O2", "-Wall", "-Werror", str(HERE / "probe_loader.c"), "-o", str(loader)]
        + ["-lbpf"],
    ]
    for argv in commands:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return obj, loader
