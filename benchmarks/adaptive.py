"""Auto against the best fixed setting: issue 10's bar for adaptive batching.

Usage (root): ``.venv/bin/python benchmarks/adaptive.py [--transport packet-v3|udp-mmsg]
[--clients 16,32,64] [--values 8,16,32,64] [--duration 6] [--rounds 1] [--json FILE]``

Runs the echo workload (1024-byte responses, MTU 1500, block timeout 10 ms) straight from
:mod:`servers.workload`, with no tracer attached: a traced sweep (``stackprof sweep ...
--frames-per-block 8,16,32,64,auto``) shows the same thing at twice the wall time. Per
client count, every fixed value and ``auto`` run back to back (interleaved, round after
round, so that drift in the shared machine's load hits them alike); the figure per cell
is the median requests/s over the rounds. Prints each cell, auto's changes, and auto over
the best fixed value; exit 1 if auto is more than 10% below it anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.overhead import OneLineParser, Stop, json_text, unwind_on_signals  # noqa: E402
from profiler import atomic  # noqa: E402
from servers.topology import Topology  # noqa: E402
from servers.workload import TransportOptions, Workload  # noqa: E402

BAR = 0.9  # the "within 10%"
KNOB = {"packet-v3": "frames_per_block", "udp-mmsg": "batch"}


def options(transport: str, value: int | str) -> TransportOptions:
    """The transport's knob set to value (auto or fixed)."""
    return TransportOptions(**{KNOB[transport]: value})  # type: ignore[arg-type]


def one_run(transport: str, clients: int, value: int | str, duration: float) -> dict[str, Any]:
    """Requests/s the clients verified in one run, and auto's changes."""
    with (
        Topology(1500) as topo,
        Workload(
            topo,
            transport,
            clients=clients,
            response_size=1024,
            duration=duration,
            options=options(transport, value),
        ) as load,  # fmt: skip
    ):
        result = load.wait()
    rate = result.received / result.duration_s if result.duration_s else 0.0
    changes = (result.server.get("adapt") or {}).get("changes", [])
    ring = result.server.get("ring") or {}
    waited = ring.get("frames_timed_out", 0) / ring["frames"] if ring.get("frames") else 0.0
    return {"rate": round(rate, 1), "waited": round(waited, 3), "changes": changes}


def cell_ratios(rates: dict[int | str, list[float]]) -> tuple[int | str, float, float]:
    """(best fixed value, its median rate, auto's median over it)."""
    medians = {v: statistics.median(r) for v, r in rates.items()}
    fixed = {v: m for v, m in medians.items() if v != "auto"}
    best = max(fixed, key=lambda v: fixed[v])
    return best, fixed[best], medians["auto"] / fixed[best] if fixed[best] else 0.0


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell, rounds interleaved; a line per run as it ends."""
    values: list[int | str] = [*args.values, "auto"]
    cells = []
    for clients in args.clients:
        rates: dict[int | str, list[float]] = {v: [] for v in values}
        for rnd in range(args.rounds):
            for value in values:
                run = one_run(args.transport, clients, value, args.duration)
                rates[value].append(run["rate"])
                steps = " ".join(
                    f"{c['at_s']}s:{c.get('fpb', c.get('batch'))}" for c in run["changes"]
                )
                line = f"c{clients} r{rnd} {value}: {run['rate']:.0f}/s waited {run['waited']:.0%}"
                print(f"{line} {steps}", flush=True)
        best, best_rate, ratio = cell_ratios(rates)
        cells.append(
            {"clients": clients, "rates": rates, "best_fixed": best,
             "best_rate": best_rate, "auto_over_best": round(ratio, 3)}
        )  # fmt: skip
        print(f"c{clients}: auto {ratio:.0%} of best fixed ({best})", flush=True)
    return cells


def _counts(text: str) -> list[int]:
    """A comma-separated list of counts, each 1..1024."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a list of numbers") from None
    if not all(1 <= c <= 1024 for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: each must be in 1..1024")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="adaptive.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=sorted(KNOB), default="packet-v3")
    parser.add_argument("--clients", type=_counts, default=[16, 32, 64])
    parser.add_argument("--values", type=_counts, default=[8, 16, 32, 64])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 1 <= args.duration <= 60:
        parser.error("--rounds must be in 1..100 and --duration in 1..60")
    if args.json and not args.json.absolute().parent.is_dir():
        parser.error(f"--json: no folder {args.json.absolute().parent}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("adaptive.py: needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    unwind_on_signals()
    try:
        cells = measure(args)
    except (KeyboardInterrupt, Stop):
        print("interrupted: nothing left running", file=sys.stderr)
        return 130
    for cell in cells:
        ratio, best = cell["auto_over_best"], cell["best_fixed"]
        print(f"{cell['clients']:>3} clients: auto/best = {ratio:.3f} (best {best})")
    if args.json:
        atomic.write_text(args.json, json_text({"transport": args.transport, "cells": cells}))
    return 0 if all(c["auto_over_best"] >= BAR for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
