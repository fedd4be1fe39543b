"""epoll with a nanosecond timeout, for event loops whose timers are microseconds apart.

Python's ``select.epoll.poll`` rounds its timeout up to a millisecond; ``epoll_pwait2``
(Linux 5.11, glibc 2.35) takes a timespec. Where libc lacks it, epoll's own is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import select
from typing import Any

from servers.mmsg import Timespec

_MAX_EVENTS = 256


_FIELDS = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]
if platform.machine() == "x86_64":

    class _EpollEvent(ctypes.Structure):
        _pack_ = 1  # the kernel's struct epoll_event is packed on x86-64 only
        _fields_ = _FIELDS

else:

    class _EpollEvent(ctypes.Structure):  # type: ignore[no-redef]
        _fields_ = _FIELDS


def _pwait2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    try:
        call = libc.epoll_pwait2
    except AttributeError:
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    call.restype = ctypes.c_int
    return call


_EPOLL_PWAIT2 = _pwait2()


class Poller:
    """epoll with a nanosecond timeout (epoll_pwait2), or epoll's own (milliseconds)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.events = (_EpollEvent * _MAX_EVENTS)()
        self.timeout = Timespec()

    def register(self, fd: int) -> None:
        self.epoll.register(fd, select.EPOLLIN)

    def wait(self, timeout_ns: int) -> list[int]:
        """The readable fds, waiting at most timeout_ns."""
        timeout_ns = max(0, timeout_ns)
        if _EPOLL_PWAIT2 is None:
            return [fd for fd, _ in self.epoll.poll(timeout_ns / 1e9, _MAX_EVENTS)]
        self.timeout.tv_sec, self.timeout.tv_nsec = divmod(timeout_ns, 1_000_000_000)
        got = _EPOLL_PWAIT2(
            self.epoll.fileno(), self.events, _MAX_EVENTS, ctypes.byref(self.timeout), None
        )
        return [self.events[i].data & 0xFFFFFFFF for i in range(max(0, got))]
