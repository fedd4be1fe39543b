"""What every reference server does the same way: options, signals, counters, the JSON report.

A server parses :func:`option_parser`'s options with :func:`parse_args`,
calls :func:`start` before opening its socket, builds its service with
:func:`make_handler` (``--workload``: echo's instant answer, or the lock manager's
consistent-read copy of :mod:`servers.lms`) and asks it for every response, registers
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
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

from servers import lms
from servers.netns_exec import child_setup
from servers.payload import HEADER_SIZE, body, build_response, check_size, parse_header

WORKLOADS = ("echo", "lms")


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
    service: dict[str, Any] = field(default_factory=dict)

    def stop_clocks(self, started: Started) -> None:
        """Set duration_s and cpu_s to the time since ``ready``."""
        self.duration_s = round(time.monotonic() - started.wall, 6)
        self.cpu_s = round(cpu_seconds() - started.cpu, 6)


class Handler(Protocol):
    """What a server asks of the service behind it: a response per request.

    ``response_size`` is every response's size (send slots are made for it);
    ``respond`` builds one (None: not a request of ours); ``write`` writes one into
    a send slot (False: not ours); ``report`` is the service's part of the counters.
    """

    response_size: int

    def respond(self, request: bytes | memoryview) -> bytes | None: ...

    def write(self, request: memoryview, out: memoryview) -> bool: ...

    def report(self) -> dict[str, Any]: ...


@dataclass
class EchoHandler:
    """The reference service: an instant answer of response_size bytes (:mod:`servers.payload`)."""

    response_size: int

    def respond(self, request: bytes | memoryview) -> bytes | None:
        return build_response(request, self.response_size)

    def write(self, request: memoryview, out: memoryview) -> bool:
        """The same bytes as respond, written into out without allocating."""
        parsed = parse_header(request)
        if parsed is None:
            return False
        size = self.response_size
        out[:HEADER_SIZE] = request[:HEADER_SIZE]
        out[HEADER_SIZE:size] = body(parsed[1], size - HEADER_SIZE)
        return True

    def report(self) -> dict[str, Any]:
        return {"name": "echo"}


def make_handler(args: argparse.Namespace) -> Handler:
    """The service the options ask for (``--workload``; lms calibrates its work here)."""
    if args.workload == "lms":
        return lms.make_handler(args.serve_us, args.cache_blocks)
    return EchoHandler(args.response_size)


def option_parser(doc: str, bind_help: str | None, sink: bool) -> argparse.ArgumentParser:
    """The options every server takes, described by the first line of its doc.

    ``--bind`` (with bind_help) unless the server finds its address otherwise
    (bind_help None); ``--sink`` for a server that can also just count.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if bind_help is not None:
        parser.add_argument("--bind", required=True, help=bind_help)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response-size", type=int, default=8192, help="echo's responses")
    parser.add_argument("--workload", choices=WORKLOADS, default="echo", help="the service")
    parser.add_argument(
        "--serve-us", type=float, default=lms.DEFAULT_SERVE_US, help="lms: CPU µs per request"
    )
    parser.add_argument(
        "--cache-blocks", type=int, default=lms.DEFAULT_CACHE_BLOCKS, help="lms: blocks cached"
    )
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
    if not 0 <= args.serve_us <= 1e6 or args.cache_blocks < 1:
        parser.error("--serve-us must be 0..1e6 and --cache-blocks >= 1")
    return args


def start(cpu: int | None) -> None:
    """Before the socket opens: stop on signals, die with the parent, pin to cpu."""
    stop_on_signals()
    child_setup(cpu)


def report(counters: Counters, handler: Handler | None = None) -> int:
    """Print the counters (and the service's report) as the one JSON line the parent
    reads; the exit status."""
    if handler is not None:
        counters.service = handler.report()
    print(json.dumps(asdict(counters)), flush=True)
    return 0


_FIRST = ("mode", "version", "mtu", "batch", "batch_timeout_ms", "send_batch", "ring_config")


def _sum_into(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, bool) or key in _FIRST or isinstance(value, str):
            total.setdefault(key, value)
        elif isinstance(value, int | float):
            total[key] = round(total.get(key, 0) + value, 6)
        elif isinstance(value, dict) and key != "service":
            _sum_into(total.setdefault(key, {}), value)
        else:
            total.setdefault(key, value)


def merge_server_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several servers' counters as one: counts and CPU seconds summed (so cpu_s / duration_s
    may pass 1 with several servers), the longest duration, configuration from the first,
    means recomputed; each server's own report in ``per_server``."""
    if len(reports) == 1:
        return reports[0]
    total: dict[str, Any] = {}
    for report in reports:
        _sum_into(total, report)
    total["duration_s"] = max(r.get("duration_s", 0.0) for r in reports)
    if total.get("batches"):
        total["batch_mean"] = round(total["datagrams"] / total["batches"], 3)
    ring = total.get("ring") or {}
    if ring.get("blocks"):
        total["frames_per_block"] = round(ring["frames"] / ring["blocks"], 3)
    if "service" in total:
        services = [r.get("service") or {} for r in reports]
        served = sum(s.get("served", 0) for s in services)
        work = sum(s.get("served", 0) * s.get("measured_us", 0.0) for s in services)
        total["service"] = {**services[0], "served": served}
        total["service"]["measured_us"] = round(work / served, 3) if served else 0.0
    total["per_server"] = reports
    return total
