"""net:* tracepoint events counted per device in a tracefs instance of stackprof's own.

A private instance (``instances/stackprof-<tag>-<pid>``) has its own buffer and its own
enable and filter files, so the top-level buffer and anyone else's events are untouched.
:func:`net_events` removes it on every exit that runs Python; an instance a killed
process left behind is removed by :func:`remove_stale_instances` (its pid is gone).
No BPF here: the kernel's own event output, read as text.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
PREFIX = "stackprof-"
_STALE = re.compile(rf"^{PREFIX}[\w-]+-(\d+)$")
# One line of a net:* event that names its device: "... netif_rx: dev=veth0 ... len=1500 ...".
LINE = re.compile(r"\s(\w+): dev=(\S+) .*?\blen=(\d+)")
Counts = Counter[tuple[str, str, int]]  # (event, device, skb len) -> events


def instance_dir(tag: str, pid: int | None = None) -> Path:
    """The instance this process (or pid) records tag's events in."""
    return TRACEFS / "instances" / f"{PREFIX}{tag}-{os.getpid() if pid is None else pid}"


def available(events: Sequence[str] = ()) -> str | None:
    """None if tracefs has instances and every net event named, else why not."""
    try:
        if not (TRACEFS / "instances").is_dir():
            return f"no tracefs instances at {TRACEFS}"
        missing = [e for e in events if not (TRACEFS / "events/net" / e).is_dir()]
    except OSError as exc:
        return f"tracefs unreadable: {exc.strerror}"
    return f"no net:{', net:'.join(missing)} in tracefs" if missing else None


def count(trace: str) -> Counts:
    """The events of a trace file's text, by event, device and skb length."""
    return Counter((m[1], m[2], int(m[3])) for m in map(LINE.search, trace.splitlines()) if m)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_instances() -> list[str]:
    """Remove the instances of stackprof processes that are gone; return their names."""
    removed = []
    with contextlib.suppress(OSError):
        for inst in sorted((TRACEFS / "instances").iterdir()):
            match = _STALE.match(inst.name)
            if match and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    inst.rmdir()
                    removed.append(inst.name)
    return removed


@contextlib.contextmanager
def net_events(
    devices: Sequence[str], events: Sequence[str], tag: str = "events"
) -> Iterator[Callable[[], Counts]]:
    """The net:* events (those this kernel has) of devices, recorded in a tracefs
    instance of our own; yields a reader of the counts so far. On every exit each
    event's enable and filter are put back as found, the buffer is cleared and the
    instance removed."""
    inst = instance_dir(tag)
    inst.mkdir()
    saved: dict[Path, tuple[str, str]] = {}
    try:
        only = " || ".join(f'name == "{dev}"' for dev in devices)
        for event in events:
            path = inst / "events/net" / event
            if not path.is_dir():
                continue
            saved[path] = ((path / "enable").read_text(), (path / "filter").read_text())
            (path / "filter").write_text(only)
            (path / "enable").write_text("1")
        yield lambda: count((inst / "trace").read_text())
    finally:
        try:
            for path, (enable, filt) in saved.items():
                (path / "enable").write_text(enable.strip())
                (path / "filter").write_text("0" if filt.strip() == "none" else filt)
            (inst / "trace").write_text("")
        finally:
            inst.rmdir()
