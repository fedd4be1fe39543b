"""What stackprof costs the traffic it watches, against no tracing and against empty programs.

Usage (root): ``python benchmarks/overhead.py [--rounds 5] [--seconds 3] [--json FILE]``
(``--mtus``, ``--cpus`` narrow the cells; ``--blast-only`` skips the latency runs;
``--hooks KINDS`` narrows the hook kinds, as ``stackprof attach --hooks`` does).

The load is sockperf (C) between the lab's two namespaces, 8 KiB messages, in cells: the
veth at MTU 1500 (a datagram is 6 fragments) and 9000 (one packet), both ends on one CPU
and split over two. Each round runs every configuration one after the other, the order
rotated every round so that none always runs first or last while the machine drifts:
``none``; ``empty`` and ``clock`` programs (bpf/empty.bpf.c, attached to exactly the hooks
stackprof chooses); ``stackprof`` attach, and its ``lean`` (``--detail lean``) and
``sample16`` (``--sample 16``) presets when this stackprof has them. Under each, per
cell, a ping-pong (latency: sockperf's p50 and p99) and a throughput run (datagrams the
server read per second); then, BPF stats on, one more ping-pong in the reference cell
(MTU 1500, one CPU) gives events and BPF ns per datagram from the kernel's counters.
Last, stampcount.bpf.o (stackprof's programs counting their timestamps) gives the timestamps
stackprof takes per datagram, for its design floor. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import overhead_figures as figures  # noqa: E402
from benchmarks import overhead_report as report  # noqa: E402
from benchmarks.overhead_configs import (  # noqa: E402
    CONFIGS,
    FLOORS,
    Attached,
    AttachFailed,
    attach_figures,
    attach_help,
    attached,
    availability,
    check_floor_objects,
    chosen_programs,
    verbose,
)
from benchmarks.overhead_figures import LoadRun  # noqa: E402
from benchmarks.overhead_load import (  # noqa: E402
    MSG_SIZE,
    RUN_OVERHEAD_S,
    Cell,
    Lab,
    LoadError,
    cannot_run,
)
from benchmarks.overhead_stats import (  # noqa: E402
    EventCost,
    StampCount,
    combined,
    count_stamps,
    disturbances,
    event_cost,
    wait_quiet,
)
from profiler import atomic  # noqa: E402
from profiler.errors import SessionError  # noqa: E402
from profiler.hooks import KINDS  # noqa: E402
from profiler.loader import HookChoice  # noqa: E402
from profiler.session import hooks_or_fail  # noqa: E402
from servers.topology import Topology  # noqa: E402

PORT = 7000
MTUS = (1500, 9000)
CPUS = (1, 2)
MAIN_PID = os.getpid()
REFERENCE = Cell(1500, 1)  # the issue's: 8 KiB in 6 fragments, both ends on one CPU
STAMPS_METHOD = (
    "counted: stampcount.bpf.o is stackprof.bpf.c built with every bpf_ktime_get_ns() also "
    "adding 1 to a global; attached as attach attaches stackprof, over one ping-pong in the "
    "reference cell, that count over the datagrams both namespaces read"
)


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind through every context manager, as Ctrl-C does."""


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


@dataclass
class Bench:
    """One benchmark run: its settings, the lab, and what it has measured so far."""

    args: argparse.Namespace
    choice: HookChoice
    status: dict[str, str | None]  # None: measured; else why not
    cells: list[Cell]
    reference: Cell
    attach_extra: tuple[str, ...] = ()  # --verbose, when attach has it
    lab: Lab | None = None
    runs: list[LoadRun] = field(default_factory=list)
    costs: list[EventCost] = field(default_factory=list)
    attaches: dict[str, list[Attached]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def available(self) -> list[str]:
        return [c for c in CONFIGS if self.status[c] is None]


def rotated(configs: list[str], rnd: int) -> list[str]:
    """This round's order: the configurations rotated by the round number."""
    k = rnd % len(configs)
    return configs[k:] + configs[:k]


def _load_run(bench: Bench, rnd: int, config: str, cell: Cell) -> None:
    """A ping-pong (unless --blast-only) and a throughput run in one cell."""
    assert bench.lab is not None
    seconds = bench.args.seconds
    pingpong = None
    if not bench.args.blast_only:
        pp = bench.lab.pingpong(cell, seconds)
        pingpong = LoadRun(
            rnd, config, cell.mtu, cell.cpus, "pingpong", p50_us=pp.p50_us, p99_us=pp.p99_us,
            avg_us=pp.avg_us, round_trips_per_s=pp.round_trips_per_s,
        )  # fmt: skip
        bench.runs.append(pingpong)
    tp = bench.lab.throughput(cell, seconds)
    throughput = LoadRun(
        rnd, config, cell.mtu, cell.cpus, "throughput",
        sent_per_s=tp.sent_per_s, received_per_s=tp.received_per_s,
    )  # fmt: skip
    bench.runs.append(throughput)
    report.print_run(cell.label, pingpong, throughput)


def measure(bench: Bench, rnd: int, config: str) -> None:
    """One configuration in one round: attached, every cell, then BPF stats."""
    assert bench.lab is not None
    with attached(config, bench.lab, bench.choice, bench.args.hooks, bench.attach_extra) as att:
        report.print_attached(rnd, bench.args.rounds, config, att.start_s, att.rss_attached_mib)
        for cell in bench.cells:
            _load_run(bench, rnd, config, cell)
        if config != "none":
            cost = event_cost(att, bench.lab, bench.reference, bench.args.seconds, rnd)
            bench.costs.append(cost)
            report.print_cost_line(cost)
    if att.start_s is not None:
        bench.attaches.setdefault(config, []).append(att)


def rounds(bench: Bench) -> None:
    """Every round; a stackprof preset that fails to attach is dropped, not fatal."""
    for rnd in range(bench.args.rounds):
        for config in rotated(bench.available(), rnd):
            try:
                measure(bench, rnd, config)
            except AttachFailed as exc:
                bench.status[config] = f"failed: attach {exc}"
                bench.failures.append(f"round {rnd + 1} {config}: attach {exc}")
                print(f"  {config}: attach failed, dropped: {exc}", flush=True)


def summarise(bench: Bench, stamps: StampCount | None) -> dict[str, Any]:
    """Every figure of the run, as the JSON holds them; printed as it is made."""
    status = {c: bench.status[c] for c in CONFIGS}
    cells = {c.key: figures.cell_summary(bench.runs, c, status) for c in bench.cells}
    for cell in cells.values():
        report.print_cell(cell)
    costs = {
        c: combined([x for x in bench.costs if x.config == c])
        for c in CONFIGS
        if any(x.config == c for x in bench.costs)
    }
    report.print_costs(costs, bench.reference.label)
    floor = figures.design_floor(costs, stamps.per_datagram if stamps else None)
    figures.cost_ratios(costs, floor)
    report.print_floor(floor, costs)
    attach = {c: attach_figures(a) for c, a in bench.attaches.items()}
    report.print_attach(attach)
    ref = cells[bench.reference.key]
    added = figures.full_added(ref)
    report.print_added(added)
    targets = figures.targets(ref, costs, floor, attach.get("stackprof", {}))
    report.print_targets(targets)
    return {
        "configs": {c: {"status": bench.status[c] or "measured"} for c in CONFIGS},
        "runs": [asdict(r) for r in bench.runs],
        "summary": {
            "reference_cell": bench.reference.key,
            "none_spread_pct": ref["none_p50_spread_pct"],
            "cells": cells,
        },
        "event_cost": list(costs.values()),
        "event_cost_rounds": [c.row() for c in bench.costs],
        "timestamp_ns": floor["timestamp_ns"],
        "stamps": {**asdict(stamps), "per_datagram": stamps.per_datagram} if stamps else None,
        "stamps_method": STAMPS_METHOD,
        "design_floor": floor,
        "attach": attach,
        "full_added_p50": added,
        "targets": targets,
        "failures": bench.failures,
    }


def estimate_s(bench: Bench) -> float:
    """About how long the run takes (sockperf's own 2 s start per run included)."""
    per_run = bench.args.seconds + RUN_OVERHEAD_S
    runs = len(bench.cells) * (1 if bench.args.blast_only else 2)
    configs = bench.available()
    per_round = sum(runs * per_run + (per_run + 3.0 if c != "none" else 0) for c in configs)
    return bench.args.rounds * per_round + per_run + 5.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    choice = hooks_or_fail(args.hooks, (), "attach")
    check_floor_objects(chosen_programs(choice))
    cells = [Cell(m, c) for m in args.mtus for c in args.cpus]
    reference = REFERENCE if REFERENCE in cells else cells[0]
    help_text = attach_help()
    status = {c: None for c in ("none", *FLOORS)} | availability(help_text)
    bench = Bench(args, choice, status, cells, reference, verbose(help_text))
    foreign = wait_quiet(args.wait_quiet)
    if foreign:
        print(f"WARNING: not alone on this machine, figures are skewed: {foreign}")
    print(f"hooks: {', '.join(c.label for c in choice.chosen.values() if c)}")
    print(
        f"sockperf {MSG_SIZE} B, {args.seconds} s per run, {args.rounds} rounds of "
        f"{', '.join(bench.available())}; cells {', '.join(c.label for c in cells)}; "
        f"about {estimate_s(bench) / 60:.1f} min",
        flush=True,
    )
    with Topology(reference.mtu) as topo, Lab(topo, PORT) as lab:
        bench.lab = lab
        rounds(bench)
        stamps = count_stamps(lab, choice, reference, args.seconds)
    doc = summarise(bench, stamps)
    foreign_after = disturbances()
    if foreign_after:
        print(f"WARNING: not alone at the end either: {foreign_after}")
    return {
        "kernel": platform.release(),
        "started_at": args.started_at,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "closed_loop": not args.blast_only,
            "hook_kinds": list(args.hooks),
            "mtus": list(args.mtus),
            "cpus": list(args.cpus),
            "msg_size": MSG_SIZE,
            "port": PORT,
            "server_cpu": lab.server_cpu,
            "other_cpu": lab.other_cpu,
            "load_generator": "sockperf",
        },
        "hooks": choice.labels(),
        "disturbances": {"start": foreign, "end": foreign_after},
        **doc,
    }


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"hook kinds must be among {','.join(KINDS)}")
    return kinds


def _ints(allowed: tuple[int, ...]) -> Any:
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(dict.fromkeys(int(v) for v in text.split(",")))
        except ValueError:
            values = ()
        if not values or any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"a comma-separated list of {allowed}")
        return values

    return parse


def _seconds(text: str) -> int:
    """Whole seconds (sockperf's -t), 1..60; "2.0" is 2."""
    try:
        value = float(text)
    except ValueError:
        value = 0.5
    if not value.is_integer() or not 1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"whole seconds in 1..60, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="overhead.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every configuration")
    parser.add_argument("--seconds", type=_seconds, default=3, help="length of each sockperf run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--mtus", type=_ints(MTUS), default=MTUS, help="1500,9000 (default)")
    parser.add_argument(
        "--cpus", type=_ints(CPUS), default=CPUS, help="1,2: both ends on one CPU, on two"
    )
    parser.add_argument("--blast-only", action="store_true", help="throughput runs only")
    parser.add_argument(
        "--hooks", type=_kinds, default=KINDS, metavar="KINDS",
        help=f"hook kinds allowed, in preference order (default {','.join(KINDS)})",
    )  # fmt: skip
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, metavar="S",
        help="first wait up to S s for other tracers and workloads to finish",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be in 1..100")
    if not 0 <= args.wait_quiet <= 3600:
        parser.error("--wait-quiet must be in 0..3600 seconds")
    if args.json and not args.json.absolute().parent.is_dir():
        parser.error(f"--json: no folder {args.json.absolute().parent}")  # not after the run
    return args


def _on_signal(signum: int, frame: object) -> None:
    if os.getpid() != MAIN_PID:  # a forked helper (pyroute2's): end as it would have
        os._exit(128 + signum)
    raise Stop()


def unwind_on_signals() -> None:
    """SIGTERM and SIGHUP raise Stop, so that the lab is taken down as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refused = cannot_run("overhead.py")
    if refused:
        print(refused, file=sys.stderr)
        return 2
    args.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    unwind_on_signals()
    try:
        doc = run(args)
    except (KeyboardInterrupt, Stop):
        if os.getpid() == MAIN_PID:
            print("interrupted: nothing left running", file=sys.stderr)
        return 130
    except (SessionError, LoadError) as exc:
        print(f"overhead.py: {exc}", file=sys.stderr)
        return 1
    if args.json:
        atomic.write_text(args.json, json_text(doc))
    return 0


def json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


if __name__ == "__main__":
    sys.exit(main())
