"""What a change costs: BPF ns per datagram of ``stackprof attach`` from two checkouts.

Usage (root): ``python benchmarks/versus.py BEFORE [AFTER] [--rounds 5] [--seconds 3]
[--limit 1.05] [--json FILE]``. BEFORE and AFTER are built checkouts (``bash setup.sh``, or
``make -C bpf`` and its objects copied to ``profiler/assets``); AFTER defaults to this one.

Both are run as a user runs them, ``python -m profiler attach`` on the lab's two namespaces
(a datagram's both ends traced), against the same sockperf ping-pong of 8 KiB datagrams at
MTU 1500 with both ends on one CPU (overhead.py's reference cell), in alternating rounds
whose order rotates. Each round reads the kernel's BPF stats over sockperf's test: events
and BPF ns per datagram, program by program. The figure is AFTER's median over BEFORE's,
with a verdict against ``--limit``: the production-hosts issue asks that following datagrams
from and to other hosts cost the both-ends case no more than 5% more than before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.overhead import (  # noqa: E402
    PORT,
    REFERENCE,
    OneLineParser,
    Stop,
    json_text,
    unwind_on_signals,
)
from benchmarks.overhead_configs import stackprof  # noqa: E402
from benchmarks.overhead_load import Lab, LoadError, cannot_run  # noqa: E402
from benchmarks.overhead_stats import EventCost, event_cost  # noqa: E402
from profiler import atomic  # noqa: E402
from profiler.errors import SessionError  # noqa: E402
from profiler.hooks import KINDS  # noqa: E402
from servers.topology import Topology  # noqa: E402


def _checkout(text: str) -> Path:
    """A folder holding a built stackprof: its package and its BPF object."""
    path = Path(text).resolve()
    if not (path / "profiler" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a stackprof checkout")
    if not (path / "profiler" / "assets" / "stackprof.bpf.o").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not built (run its setup.sh)")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="versus.py", description=__doc__.splitlines()[0])
    parser.add_argument("before", type=_checkout, help="the checkout before the change")
    parser.add_argument("after", type=_checkout, nargs="?", default=REPO, help="(this one)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both (default 5)")
    parser.add_argument("--seconds", type=int, default=3, help="sockperf test length (3)")
    parser.add_argument("--limit", type=float, default=1.05, help="after/before allowed")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 1 <= args.seconds <= 60:
        parser.error("--rounds must be in 1..100 and --seconds in 1..60")
    if args.limit <= 0:
        parser.error("--limit must be positive")
    if args.json and not args.json.absolute().parent.is_dir():
        parser.error(f"--json: no folder {args.json.absolute().parent}")
    return args


def measure(args: argparse.Namespace) -> dict[str, list[EventCost]]:
    """Every round of both checkouts, the order rotated each round."""
    sides = [("before", args.before), ("after", args.after)]
    costs: dict[str, list[EventCost]] = {"before": [], "after": []}
    with Topology(REFERENCE.mtu) as topo, Lab(topo, PORT) as lab:
        for rnd in range(args.rounds):
            for which, tree in sides[rnd % 2 :] + sides[: rnd % 2]:
                with stackprof("stackprof", lab, KINDS, repo=tree) as att:
                    cost = event_cost(att, lab, REFERENCE, args.seconds, rnd)
                costs[which].append(cost)
                print(
                    f"round {rnd + 1}/{args.rounds} {which:6} {cost.ns_per_datagram:7.0f} ns "
                    f"per datagram, {cost.events_per_datagram:.1f} events",
                    flush=True,
                )
    return costs


def programs(costs: list[EventCost]) -> dict[str, dict[str, float]]:
    """Each program's median events and mean ns per datagram over the rounds."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for cost in costs:
        for p in cost.programs:
            if p.events and cost.datagrams:
                rows.setdefault(p.name, []).append((p.events / cost.datagrams, p.mean_ns))
    return {
        name: {
            "events_per_datagram": statistics.median(e for e, _ in values),
            "mean_ns": statistics.median(m for _, m in values),
        }
        for name, values in sorted(rows.items())
    }


def summarise(args: argparse.Namespace, costs: dict[str, list[EventCost]]) -> dict[str, Any]:
    medians = {k: statistics.median(c.ns_per_datagram for c in v) for k, v in costs.items()}
    ratio = medians["after"] / medians["before"] if medians["before"] else 0.0
    doc = {
        "before": str(args.before),
        "after": str(args.after),
        "params": {"rounds": args.rounds, "seconds": args.seconds, "cell": REFERENCE.key},
        "ns_per_datagram": medians,
        "rounds": {k: [c.row() for c in v] for k, v in costs.items()},
        "programs": {k: programs(v) for k, v in costs.items()},
        "target": {
            "value": round(ratio, 4),
            "limit": args.limit,
            "verdict": "met" if ratio <= args.limit else "not met",
        },
    }
    for which in ("before", "after"):
        spread = [c.ns_per_datagram for c in costs[which]]
        print(f"{which:6}: median {medians[which]:.0f} ns ({min(spread):.0f}..{max(spread):.0f})")
    print(f"after / before: {ratio:.3f} (limit {args.limit}): {doc['target']['verdict']}")
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refused = cannot_run("versus.py")
    if refused:
        print(refused, file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    unwind_on_signals()
    try:
        doc = summarise(args, measure(args))
    except (KeyboardInterrupt, Stop):
        print("interrupted: nothing left running", file=sys.stderr)
        return 130
    except (SessionError, LoadError) as exc:
        print(f"versus.py: {exc}", file=sys.stderr)
        return 1
    if args.json:
        atomic.write_text(args.json, json_text({"started_at": started, **doc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
