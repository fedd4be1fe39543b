"""What every reference server does the same way: stop on a signal, wake its poll, count CPU.

A server installs :func:`stop_on_signals` first, registers :func:`wakeup_fd`
with its poller (SIGTERM/SIGINT then also end a blocking poll), checks
``Stop.requested`` between messages so a flood cannot keep it from stopping,
and reports :func:`cpu_seconds` with its counters, so transports can be
compared per CPU second and not only per wall second.
"""

from __future__ import annotations

import os
import resource
import signal


class Stop:
    """Set by the signal handler."""

    requested = False

    @classmethod
    def handler(cls, signum: int, frame: object) -> None:
        cls.requested = True


def stop_on_signals() -> None:
    """SIGTERM and SIGINT set Stop.requested instead of killing the process mid-report."""
    signal.signal(signal.SIGTERM, Stop.handler)
    signal.signal(signal.SIGINT, Stop.handler)


def wakeup_fd() -> int:
    """A pipe's read end that becomes readable when a signal arrives (poll it)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return wake_r


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 6)
