"""The proven hook choice, remembered per kernel and object, so a start need not prove
every candidate again (seconds of loads) while nothing it depends on has changed.

The key is what decides whether a candidate works: the kernel (release, build and
the digest of its BTF), the BPF object (its digest), the kinds allowed and the hook
points skipped (asked for with --skip, of no use to the transport, or left out by
--detail lean). A new kernel, a rebuilt object or other options miss the cache and
are proved afresh; a choice that fails to load anyway is dropped and re-proved
(loader.Tracer). ``STACKPROF_NO_HOOK_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from profiler import atomic

BTF = Path("/sys/kernel/btf/vmlinux")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/stackprof, else ~/.cache/stackprof."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stackprof"


def enabled() -> bool:
    return os.environ.get("STACKPROF_NO_HOOK_CACHE", "") in ("", "0")


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "absent"


def key(obj: Path, kinds: tuple[str, ...], skip: tuple[str, ...]) -> str:
    """What the choice depends on, as one digest."""
    parts = {
        "release": platform.release(),
        "version": platform.version(),
        "btf": _digest(BTF),
        "object": _digest(obj),
        "kinds": list(kinds),
        "skip": sorted(set(skip)),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _file(digest: str) -> Path:
    return cache_dir() / f"hooks-{digest}.json"


def load(digest: str) -> dict[str, Any] | None:
    """The remembered choice ({"chosen": {point: label|None}, "refused": {...}}), or None."""
    if not enabled():
        return None
    try:
        doc = json.loads(_file(digest).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("key") == digest else None


def store(digest: str, chosen: dict[str, str | None], refused: dict[str, list[str]]) -> None:
    """Remember a proven choice; a cache that cannot be written is only slower."""
    if not enabled():
        return
    doc = {"key": digest, "chosen": chosen, "refused": refused}
    with contextlib.suppress(OSError):
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic.write_text(_file(digest), json.dumps(doc, indent=1))


def forget(digest: str) -> None:
    with contextlib.suppress(OSError):
        _file(digest).unlink()
