"""What every reference server does the same way: options, signals, counters, the JSON report.

A server parses :func:`option_parser`'s options with :func:`parse_args`,
calls :func:`start` before opening its socket, registers
:func:`wakeup_fd` with its poller (SIGTERM/SIGINT then also end a blocking
poll), checks ``Stop.requested`` between messages so a flood cannot keep it
from stopping, and ends with :func:`report`. Its counters extend
:class:`Counters`, timed from :func:`ready` (wall and CPU time, so transports
can be compared per CPU second and not only per wall second).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

from servers.netns_exec import child_setup
from servers.payload import check_size


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


class Started(NamedTuple):
    """The clocks when a server said ``ready``: what duration_s and cpu_s count from."""

    wall: float
    cpu: float


def ready() -> Started:
    """Print ``ready`` (the parent waits for it to start the clients) and start the clocks."""
    started = Started(time.monotonic(), cpu_seconds())
    print("ready", flush=True)
    return started


@dataclass(kw_only=True)
class Counters:
    """What every server counts; each server's Counters adds its own. Printed as JSON at the end.

    Keyword-only, so a server's own fields may come with or without defaults.
    """

    mode: str
    datagrams: int = 0
    bytes_received: int = 0
    requests: int = 0
    bad_requests: int = 0
    responses: int = 0
    bytes_sent: int = 0
    send_errors: int = 0
    wakeups: int = 0
    duration_s: float = 0.0
    cpu_s: float = 0.0

    def stop_clocks(self, started: Started) -> None:
        """Set duration_s and cpu_s to the time since ``ready``."""
        self.duration_s = round(time.monotonic() - started.wall, 6)
        self.cpu_s = round(cpu_seconds() - started.cpu, 6)


def option_parser(doc: str, bind_help: str | None, sink: bool) -> argparse.ArgumentParser:
    """The options every server takes, described by the first line of its doc.

    ``--bind`` (with bind_help) unless the server finds its address otherwise
    (bind_help None); ``--sink`` for a server that can also just count.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if bind_help is not None:
        parser.add_argument("--bind", required=True, help=bind_help)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response-size", type=int, default=8192)
    if sink:
        parser.add_argument("--sink", action="store_true", help="count datagrams, answer none")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv and check what every server checks (a usage error, exit 2, if wrong)."""
    args = parser.parse_args(argv)
    try:
        check_size("--response-size", args.response_size)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def start(cpu: int | None) -> None:
    """Before the socket opens: stop on signals, die with the parent, pin to cpu."""
    stop_on_signals()
    child_setup(cpu)


def report(counters: Counters) -> int:
    """Print the counters as the one JSON line the parent reads; the exit status."""
    print(json.dumps(asdict(counters)), flush=True)
    return 0
