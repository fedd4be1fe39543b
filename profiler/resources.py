"""Where the BPF objects and the header shared with them are: package data, or the checkout.

The package ships them in ``profiler/assets/`` (``*.bpf.o`` and ``stackprof.h``,
found through :mod:`importlib.resources`): ``setup.sh`` copies them there after
``make -C bpf``, keeping mtimes, and a wheel built from the checkout carries them.

The rule: the packaged copies, unless profiler/ sits in a source checkout
(``bpf/Makefile`` next to it) in which some file -- an object in ``bpf/.output/``
or ``bpf/stackprof.h`` -- is newer than its copy or has none; then every file
comes from the checkout (``bpf/.output/NAME.bpf.o``, ``bpf/stackprof.h``). So an
installed package uses its copies, and a checkout never loads a copy made stale
by ``make -C bpf`` (tests/guest rebuilds objects that way) or by an edit of the
header, nor mixes copies with fresh builds (doctor finds probe.bpf.o next to
stackprof.bpf.o). Copies made by setup.sh have their source's mtime: a tie is current.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

ASSETS = "assets"
HEADER = "stackprof.h"
# What bpf/ builds and setup.sh copies.
OBJECTS = ("stackprof", "probe", "empty", "clock", "stampcount")

_FIX = "run `bash setup.sh` (in a checkout: `make -C bpf`), or reinstall stackprof"


class MissingResource(FileNotFoundError):
    """A BPF object or the shared header is neither packaged nor built."""


def packaged(filename: str) -> Path:
    """Where the package data copy of filename is (whether or not it exists)."""
    folder = importlib.resources.files("profiler") / ASSETS
    if not isinstance(folder, Path):
        raise MissingResource(f"profiler is not installed as files ({folder}): {_FIX}")
    return folder / filename


def checkout(filename: str) -> Path | None:
    """Where a source checkout builds filename, if profiler/ is in one."""
    bpf = Path(__file__).resolve().parent.parent / "bpf"
    if not (bpf / "Makefile").is_file():
        return None
    return bpf / filename if filename.endswith(".h") else bpf / ".output" / filename


def copies_current() -> bool:
    """Whether no file of the checkout (if any) is newer than its packaged copy or lacks one."""
    header = checkout(HEADER)
    if header is None:
        return True
    for built in [header, *sorted(header.parent.glob(".output/*.bpf.o"))]:
        mine, theirs = _mtime(packaged(built.name)), _mtime(built)
        if theirs is not None and (mine is None or theirs > mine):
            return False
    return True


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def locate(filename: str) -> Path:
    """The file the rule above picks, not checked to exist (libbpf's open says what to do)."""
    built = checkout(filename)
    return packaged(filename) if built is None or copies_current() else built


def _existing(filename: str) -> Path:
    path = locate(filename)
    if path.is_file():
        return path
    places = [str(p) for p in (packaged(filename), checkout(filename)) if p is not None]
    raise MissingResource(f"{filename} not found (looked at {' and '.join(places)}): {_FIX}")


def bpf_object(name: str) -> Path:
    """The object built from bpf/NAME.bpf.c (name: "stackprof", "probe", "empty", "clock")."""
    return _existing(f"{name}.bpf.o")


def shared_header() -> Path:
    """bpf/stackprof.h, the constants and layouts the Python side parses (profiler.abi)."""
    return _existing(HEADER)
