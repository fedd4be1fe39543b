"""The stackprof command line: parses, validates, and hands over to the command's module."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from profiler import cli_lab
from profiler.cli_lab import int_range, transport_list
from profiler.errors import SessionError, UsageError
from profiler.hooks import BY_NAME, DETAILS, KINDS
from profiler.transports import TRANSPORTS

# The module of each command, each with run(args) -> int. Only the chosen one is
# loaded (with what it imports): report never loads BPF, only trace the servers.
COMMANDS = {
    "trace": "profiler.commands.trace",
    "attach": "profiler.commands.attach",
    "report": "profiler.commands.report",
    "compare": "profiler.commands.compare",
    "export": "profiler.commands.export",
    "doctor": "profiler.commands.doctor",
    "merge": "profiler.commands.merge",
    "lms": "profiler.commands.lms",
    "sweep": "profiler.commands.sweep",
}


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"milliseconds must be a number, not {text!r}") from None
    if not 0 < value <= 60_000:
        raise argparse.ArgumentTypeError(f"milliseconds must be in (0, 60000], not {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"duration must be a number, not {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(
            f"duration must be in [0, 86400] seconds (0: until stopped), not {value}"
        )
    return value


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
SAMPLE_MAX = (1 << 32) - 1  # the kernel's rodata holds a u32


def _interval(text: str) -> float:
    """Seconds, or a number with s, m or h: 90, 5s, 10m, 1h."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in UNITS else (text, "s")
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"interval must be like 30s, 10m or 1h, not {text!r}"
        ) from None
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"interval must be 1 s to 24 h, not {text!r}")
    return value


def _listen(text: str) -> tuple[str, int]:
    """[ADDR:]PORT for the metrics endpoint; no ADDR listens on every address."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else ""
    return host, int_range(1, 65535, "metrics port")(port)


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"hook kinds must be among {','.join(KINDS)}")
    return kinds


def _boundaries(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown hook point {unknown[0]!r} (known: {','.join(BY_NAME)})"
        )
    return names


def _port_range(text: str) -> tuple[int, int]:
    port = int_range(1, 65535, "port")
    lo, _, hi = text.partition("-")
    first, last = port(lo), port(hi or lo)
    if first > last:
        raise argparse.ArgumentTypeError(f"empty port range {text!r}")
    return first, last


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--duration",
        type=_duration,
        default=10.0,
        help="seconds (default 10; attach: 0 runs until stopped)",
    )
    p.add_argument(
        "--metrics",
        type=_listen,
        metavar="[ADDR:]PORT",
        help="serve Prometheus /metrics here while tracing (no ADDR: every address)",
    )
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    p.add_argument("--out", type=Path, help="where to save the run (default traces/...)")
    p.add_argument(
        "--hooks",
        type=_kinds,
        default=KINDS,
        help=f"hook kinds allowed, in preference order (default {','.join(KINDS)})",
    )
    p.add_argument(
        "--skip",
        type=_boundaries,
        default=(),
        help="hook points to leave unhooked, e.g. dev_rx (their stages go unobserved)",
    )
    p.add_argument("--no-live", action="store_true", help="print only the final table")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="attach: say how long start-up took (start to probes attached)",
    )
    p.add_argument(
        "--sample",
        type=int_range(1, SAMPLE_MAX, "sample"),
        default=1,
        metavar="N",
        help="follow 1 datagram in N, chosen by a hash of its headers (the same ones on "
        "every host); counters of sent datagrams stay exact (default 1: all)",
    )
    p.add_argument(
        "--detail",
        choices=DETAILS,
        default="full",
        help="full: every hook point the kernel allows; lean: only the send, first-fragment "
        "queue, stack entry, socket enqueue and receive return, the stages between merged "
        "(to_stack, sock_recv) (default full)",
    )


def _transport_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transport options")
    g.add_argument(
        "--batch",
        type=cli_lab.int_or_auto(1, 1024, "batch"),
        default=64,
        help="udp-mmsg: recvmmsg vlen, or auto (adapts to the input)",
    )
    g.add_argument(
        "--batch-timeout-ms", type=_positive_ms, default=10.0, help="udp-mmsg: recvmmsg timeout"
    )
    g.add_argument("--send-batch", action="store_true", help="udp-mmsg: responses by sendmmsg")
    g.add_argument(
        "--frames-per-block",
        type=cli_lab.int_or_auto(1, 4096, "frames per block"),
        default=32,
        help="packet-v3: requests per ring block, or auto (adapts to the input)",
    )
    g.add_argument(
        "--block-timeout-ms", type=_positive_ms, default=10.0, help="packet-v3: block retire"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stackprof", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("trace", help="trace a reference workload on a private topology")
    t.add_argument(
        "--transport",
        type=transport_list(all_too=True),
        default=("udp",),
        help=f"{', '.join(TRANSPORTS)}; a comma list or all compares them (default udp)",
    )
    t.add_argument("--mtu", type=int_range(68, 65535, "MTU"), default=9000)
    t.add_argument("--clients", type=int_range(1, 512, "clients"), default=8)
    t.add_argument("--request-size", type=int_range(16, 65507, "request size"), default=512)
    t.add_argument("--response-size", type=int_range(16, 65507, "response size"), default=8192)
    t.add_argument("--server-cpu", type=int_range(0, 4095, "CPU"))
    t.add_argument("--client-cpu", type=int_range(0, 4095, "CPU"))
    t.add_argument("--port", type=int_range(1, 65535, "port"), default=7000)
    t.add_argument(
        "--rx",
        choices=("backlog", "napi"),
        default="backlog",
        help="how each veth end receives: backlog (netif_rx, veth's default) or napi "
        "(NAPI/GRO, as a NIC driver's receive path)",
    )
    t.add_argument(
        "--scope",
        choices=("both", "server", "client"),
        default="both",
        help="the traced host: both namespaces, or only the server's (or the clients') "
        "as a production host sees it; the workload is the same",
    )
    _transport_options(t)
    cli_lab.workload_options(t)
    _common(t)

    a = sub.add_parser("attach", help="trace existing traffic to/from a port range")
    a.add_argument("--ports", type=_port_range, required=True, help="service ports, LO-HI")
    a.add_argument(
        "--pid",
        type=int_range(1, 1 << 22, "pid"),
        help="follow only what this process sends (from its send: no receive-only datagrams)",
    )
    a.add_argument(
        "--netns",
        help="the traced host: its network namespaces, comma-separated, names (/run/netns) or "
        "paths (/proc/PID/ns/net); default every namespace on this kernel. A datagram sent "
        "outside them is followed from its receive, one received outside them to its last "
        "fragment's driver transmit",
    )
    a.add_argument(
        "--cgroup", type=Path, help="cgroup v2 directory of the senders (followed from their send)"
    )
    a.add_argument(
        "--save-every",
        type=_interval,
        metavar="INTERVAL",
        help="with --duration 0: save each interval as a run of its own (default 10m)",
    )
    _common(a)

    r = sub.add_parser("report", help="show a saved run, or a sweep's folder")
    r.add_argument("file", type=Path)
    r.add_argument("--json", type=Path, help="a sweep's folder: also write its rows here")
    c = sub.add_parser("compare", help="stage-by-stage deltas of two saved runs")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--json", type=Path, help="also write the diagnosis here as JSON")
    e = sub.add_parser(
        "export", help="write a saved run as .csv, .parquet, .hlog (HDR log), .json or .prom"
    )
    e.add_argument("file", type=Path)
    e.add_argument("out", type=Path)
    m = sub.add_parser("merge", help="sum saved runs of several hosts or intervals into one")
    m.add_argument("files", type=Path, nargs="+", metavar="RUN")
    m.add_argument("-o", "--out", type=Path, required=True, help="the merged run's file")
    d = sub.add_parser("doctor", help="what this kernel can hook, proved by loading probes")
    d.add_argument("--json", action="store_true", help="print a JSON document instead")
    cli_lab.lms_parser(sub)
    cli_lab.sweep_parser(sub)
    return parser


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: object) -> None:
    """Unwind like Ctrl-C (on SIGTERM, or SIGHUP when the terminal goes away) so
    every context manager cleans up. A forked helper
    (pyroute2 forks to enter namespaces) inherits this handler: it must just die,
    never unwind the parent's stack and remove what the parent still uses."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def _line(exc: BaseException) -> str:
    """An error as the one line promised (a file name may hold a line break)."""
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None, check_only: bool = False) -> int:
    """Exit status: 0 done, 1 the session cannot run here, 2 bad input, 130 interrupted.

    Every argument is checked (the command's ``check(args)``) before any work starts;
    ``check_only`` stops there (the property test of the command line)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        command = importlib.import_module(COMMANDS[args.command])
        if hasattr(command, "check"):
            command.check(args)
        return 0 if check_only else int(command.run(args))
    except UsageError as exc:
        print(f"stackprof: error: {_line(exc)}", file=sys.stderr)
        return 2
    except SessionError as exc:
        print(f"stackprof: {_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stackprof: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
