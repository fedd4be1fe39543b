"""The command-line options of the lab's workloads: ``trace --workload``, ``lms serve|load``
and ``sweep``. Parsing only, like :mod:`profiler.cli` (which calls these); a bad value is an
``argparse.ArgumentTypeError``, which the parser turns into a usage error (exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from profiler.transports import TRANSPORTS

WORKLOADS = ("echo", "lms")
AUTO = "auto"
PAPER_CLIENTS = (1, 2, 4, 8, 16, 32, 64)


def int_range(lo: int, hi: int, what: str) -> Any:
    """An integer in lo..hi; what names it in the refusal."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo}..{hi}, not {value}")
        return value

    return parse


def int_or_auto(lo: int, hi: int, what: str) -> Any:
    """An integer in lo..hi, or ``auto`` (the server adapts it to its arrival rate)."""
    number = int_range(lo, hi, what)

    def parse(text: str) -> int | str:
        return AUTO if text.strip() == AUTO else number(text)

    return parse


def int_list(lo: int, hi: int, what: str, auto: bool = False) -> Any:
    """A comma list of integers in lo..hi (and ``auto`` where allowed), repeats dropped."""
    one = int_or_auto(lo, hi, what) if auto else int_range(lo, hi, what)

    def parse(text: str) -> tuple[int | str, ...]:
        values = tuple(dict.fromkeys(one(v.strip()) for v in text.split(",") if v.strip()))
        if not values:
            raise argparse.ArgumentTypeError(f"{what}: an empty list")
        return values

    return parse


def transport_list(all_too: bool = False) -> Any:
    """A comma list of transports, repeats dropped; with ``all_too``, ``all`` names every
    one (trace runs them one after another and compares them; sweep takes a list)."""
    what, among = ("transport", "all or among") if all_too else ("transports", "among")

    def parse(text: str) -> tuple[str, ...]:
        if all_too and text == "all":
            return TRANSPORTS
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in TRANSPORTS]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{what} must be {among} {','.join(TRANSPORTS)}, not {text!r}"
            )
        return names

    return parse


def microseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"microseconds must be a number, not {text!r}") from None
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"microseconds must be in [0, 1000000], not {value}")
    return value


def seconds(lo: float, hi: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"seconds must be a number, not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"seconds must be in [{lo:g}, {hi:g}], not {value}")
        return value

    return parse


def workload_options(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """The service the servers run: echo's instant answer, or the seed paper's Lock
    Management Server (servers on a port range, consistent-read copies of 8 KiB blocks)."""
    g = p.add_argument_group("workload options")
    g.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="echo",
        help="echo (one server, instant answer) or lms (lock manager; --clients per server)",
    )
    g.add_argument("--servers", type=int_range(1, 64, "servers"), help="lms: servers (4)")
    g.add_argument("--serve-us", type=microseconds, default=50.0, help="lms: CPU µs a copy (50)")
    g.add_argument("--think-us", type=microseconds, default=100.0, help="lms: mean think (100)")
    g.add_argument(
        "--blocks", type=int_range(1, 1 << 24, "blocks"), default=4096, help="lms: blocks (4096)"
    )


def lms_parser(sub: Any) -> None:
    """``lms serve`` / ``lms load``: the lock manager standalone, for attach to watch."""
    lms = sub.add_parser("lms", help="run the Lock Management Server or its clients standalone")
    verbs = lms.add_subparsers(dest="verb", required=True, parser_class=type(lms))
    serve = verbs.add_parser("serve", help="S LMS servers on a port range (until stopped)")
    load = verbs.add_parser("load", help="closed-loop LMS clients, requests hashed to servers")
    for p in (serve, load):
        p.add_argument("--transport", choices=TRANSPORTS, default="udp")
        p.add_argument("--port", type=int_range(1, 65535, "port"), default=7000)
        p.add_argument("--servers", type=int_range(1, 64, "servers"), default=4)
        p.add_argument("--netns", help="run in this network namespace (a name in /run/netns)")
        p.add_argument("--request-size", type=int_range(36, 65507, "request size"), default=512)
        p.add_argument("--cpu", type=int_range(0, 4095, "CPU"))
    serve.add_argument("--bind", default="127.0.0.1", help="the servers' address")
    serve.add_argument("--ifname", help="packet-v2/v3: the interface of --bind")
    serve.add_argument("--serve-us", type=microseconds, default=50.0)
    serve.add_argument(
        "--duration", type=seconds(0, 86400), default=0.0, help="seconds (0: until stopped)"
    )
    serve.add_argument("--frames-per-block", type=int_range(1, 4096, "frames per block"))
    serve.add_argument("--block-timeout-ms", type=int_range(1, 60000, "block timeout"))
    serve.add_argument("--batch", type=int_range(1, 1024, "batch"))
    load.add_argument("--server", default="127.0.0.1", help="the servers' address")
    load.add_argument(
        "--clients", type=int_range(1, 4096, "clients"), default=64, help="per server"
    )
    load.add_argument("--think-us", type=microseconds, default=100.0)
    load.add_argument("--blocks", type=int_range(1, 1 << 24, "blocks"), default=4096)
    load.add_argument("--duration", type=seconds(0.1, 86400), default=10.0)
    load.add_argument("--workers", type=int_range(0, 256, "workers"), default=0)


def sweep_parser(sub: Any) -> None:
    """``sweep``: the matrix of transports x MTUs x clients (x frames per block), traced."""
    s = sub.add_parser(
        "sweep", help="throughput vs latency over transports, MTUs and clients (Fig. 3, Table 1)"
    )
    s.add_argument("--transport", type=transport_list(), default=("udp",), help="comma list")
    s.add_argument("--mtu", type=int_list(68, 65535, "MTU"), default=(1500, 9000))
    s.add_argument(
        "--clients",
        type=int_list(1, 512, "clients"),
        default=PAPER_CLIENTS,
        help="comma list (default 1,2,4,8,16,32,64; lms: per server)",
    )
    s.add_argument(
        "--frames-per-block",
        type=int_list(1, 4096, "frames per block", auto=True),
        help="packet-v3: comma list, auto adapts (a row per value)",
    )
    s.add_argument(
        "--batch",
        type=int_list(1, 1024, "batch", auto=True),
        help="udp-mmsg: recvmmsg vlen, comma list, auto adapts",
    )
    s.add_argument("--block-timeout-ms", type=int_range(1, 60000, "block timeout"), default=10)
    s.add_argument("--duration", type=seconds(0.5, 3600), default=5.0, help="per run (5)")
    s.add_argument("--repeat", type=int_range(1, 20, "repeat"), default=1, help="runs per point")
    s.add_argument("--request-size", type=int_range(36, 65507, "request size"), default=512)
    s.add_argument("--response-size", type=int_range(16, 65507, "response size"), default=8192)
    s.add_argument("--server-cpu", type=int_range(0, 4095, "CPU"))
    s.add_argument("--client-cpu", type=int_range(0, 4095, "CPU"))
    s.add_argument("--out", type=Path, help="the sweep's folder (default traces/sweep-<time>)")
    s.add_argument("--json", type=Path, help="also write the rows (and diagnoses) here")
    s.add_argument("--no-plot", action="store_true", help="no PNG/SVG (matplotlib)")
    workload_options(s, sweep=True)
