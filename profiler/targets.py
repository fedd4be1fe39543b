"""What ``attach`` filters on (a process, network namespaces, a cgroup v2), proved to
exist before tracing starts, and watched while it runs: a target that goes away
(the process exits, the namespace is deleted, the cgroup removed) ends the run,
which keeps what was measured until then.

Each target is told apart from a later one that reuses its number or name: a process
by its start time, a namespace or a cgroup by its inode.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import UsageError, one_line

NETNS_DIR = Path("/run/netns")
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
CLONE_NEWNET = 0x40000000


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _start_ticks(pid: int) -> int | None:
    """When pid started (clock ticks since boot), None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class Process:
    """A running process (a thread group), by pid and start time."""

    pid: int
    started: int

    def gone(self) -> str | None:
        if _start_ticks(self.pid) != self.started:
            return f"process {self.pid} exited"
        return None


def process(pid: int) -> Process:
    """The running process pid; UsageError if there is none, or pid is one of its threads."""
    try:
        status = _status(pid)
    except OSError:
        raise UsageError(f"--pid {pid}: no such process") from None
    tgid = int(status.get("Tgid", pid))
    if tgid != pid:
        raise UsageError(f"--pid {pid}: a thread of process {tgid} (give --pid {tgid})")
    started = _start_ticks(pid)
    if started is None:
        raise UsageError(f"--pid {pid}: the process has exited")
    return Process(pid, started)


def _replaced(path: Path, inode: int) -> bool:
    """Whether path no longer holds the inode it had: removed, or a new one of the same
    name (a namespace or a cgroup is known by its inode, not its name)."""
    try:
        return path.stat().st_ino != inode
    except OSError:
        return True


@dataclass(frozen=True)
class Namespace:
    """A network namespace file (a name in /run/netns, or a path), by inode."""

    given: str
    path: Path
    inode: int

    def gone(self) -> str | None:
        if _replaced(self.path, self.inode):
            return f"network namespace {self.given} was deleted"
        return None


def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def namespace(given: str) -> Namespace:
    """A network namespace by name (/run/netns/NAME) or path (/proc/PID/ns/net)."""
    path = Path(given) if "/" in given else NETNS_DIR / given
    what = f"--netns {given}"
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        missing = isinstance(exc, FileNotFoundError | NotADirectoryError)
        raise UsageError(f"{what}: {'not found' if missing else one_line(exc)}") from None
    # Only namespace files are opened (never a device or a FIFO that a name might be).
    if st.st_dev != _nsfs_device() or not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what}: not a network namespace")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"{what}: {one_line(exc)}") from None
    if kind != CLONE_NEWNET:
        raise UsageError(f"{what}: a namespace, but not a network one")
    return Namespace(given, path, st.st_ino)


def namespaces(names: str, most: int) -> list[Namespace]:
    """Comma-separated namespaces, 1 to most, each once."""
    found: dict[int, Namespace] = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        ns = namespace(name)
        found.setdefault(ns.inode, ns)
    if not 0 < len(found) <= most:
        raise UsageError(f"--netns takes 1 to {most} namespaces, not {len(found)}")
    return list(found.values())


def _cgroup2_devices() -> set[int]:
    devices = set()
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            mount = fields[1].replace("\\040", " ")
            try:
                devices.add(os.stat(mount).st_dev)
            except OSError:
                continue
    return devices


@dataclass(frozen=True)
class Cgroup:
    """A cgroup v2 directory, by inode (the kernel's cgroup id)."""

    path: Path
    inode: int

    def gone(self) -> str | None:
        if _replaced(self.path, self.inode):
            return f"cgroup {self.path} was removed"
        return None


def cgroup(path: Path) -> Cgroup:
    """A directory of a mounted cgroup v2 hierarchy."""
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        missing = isinstance(exc, FileNotFoundError | NotADirectoryError)
        raise UsageError(f"--cgroup {path}: {'not found' if missing else one_line(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"--cgroup {path}: not a directory")
    if st.st_dev not in _cgroup2_devices():
        raise UsageError(f"--cgroup {path}: not in a cgroup v2 hierarchy")
    return Cgroup(path, st.st_ino)


def first_gone(targets: Sequence[Process | Namespace | Cgroup]) -> str | None:
    """Why the first target that went away did, or None while all are there."""
    for target in targets:
        why = target.gone()
        if why:
            return why
    return None
