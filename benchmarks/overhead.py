"""What stackprof costs the traffic it watches, against no tracing and against empty programs.

Usage (root): ``.venv/bin/python benchmarks/overhead.py [--rounds 3] [--seconds 3] [--json FILE]``
(``--hooks KINDS`` narrows the hook kinds, as ``stackprof trace --hooks`` does; ``--blast-only``
skips the closed-loop runs, for a short check such as tests/guest/test_guest_overhead.py's).

One Topology at MTU 1500. Each round runs the four configurations one after
the other (none; empty programs on the same hooks; the same programs taking
one timestamp each, ``clock``; stackprof), the order
rotated every round so that no configuration always runs first or last while
the machine drifts. Under each: a blast run (8192-byte datagrams, fire and
forget: throughput) and a closed-loop run (512-byte requests, 8192-byte
responses: latency). Then, with ``kernel.bpf_stats_enabled=1`` for just that
long, one blast run under stackprof, the empty and the clock programs give the
mean ns per hook event from the kernel's own per-program counters.

The empty and clock programs are generated from the same list as stackprof's
(bpf/programs.def), with the same names and sections, so they are attached
exactly as stackprof's are (kprobes to the symbols the hook choice resolved),
whichever kinds were chosen: fentry/fexit and kprobes as well as tracepoints.

See benchmarks/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler import abi, resources  # noqa: E402
from profiler.hooks import KINDS, unused_boundaries  # noqa: E402
from profiler.libbpf import BPFObject, Program  # noqa: E402
from profiler.loader import (  # noqa: E402
    OBJECT,
    HookChoice,
    Tracer,
    attach_candidate,
    choose_hooks,
    make_config,
)
from servers.topology import NETNS_DIR, PREFIX, Topology  # noqa: E402
from servers.workload import Workload, WorkloadResult  # noqa: E402

EMPTY_OBJECT = resources.bpf_object("empty")
CLOCK_OBJECT = resources.bpf_object("clock")
FLOORS = {"empty": EMPTY_OBJECT, "clock": CLOCK_OBJECT}
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
CONFIGS = ("none", "empty", "clock", "stackprof")
TRACED = CONFIGS[1:]
MTU = 1500
PORT = 7000
DATAGRAM = 8192
BLAST_CLIENTS = 2
PINGPONG_CLIENTS = 8
PINGPONG_REQUEST = 512
PINGPONG_RESPONSE = 8192
# Blast: over veth the whole receive path up to the socket enqueue runs inside
# the sender's sendto, so the senders' CPU carries nearly every hook and is
# the bottleneck; the sink gets the other CPU to itself so it keeps up.
BLAST_SINK_CPU = 0
BLAST_CLIENT_CPU = 1
# Closed loop: server and clients share one CPU, so a round trip is the
# stack's work, not the ~28 us cross-CPU wake-up that would hide it.
PINGPONG_SERVER_CPU = 1
PINGPONG_CLIENT_CPU = 1
_NS = re.compile(rf"^{PREFIX}\d+-(cli|srv)$")

# Targets from the issue.
MAX_LOSS_VS_EMPTY = 1.3
MAX_NS_PER_EVENT = 50.0
MAX_P50_RATIO = 1.02


class Stop(Exception):
    """SIGTERM: unwind through every context manager, as Ctrl-C does."""


@dataclass
class RunFigures:
    """One configuration in one round."""

    round: int
    config: str
    datagrams_per_s: float
    blast_sent_per_s: float
    p50_us: float
    p99_us: float
    pingpong_per_s: float
    timeouts: int


@dataclass
class ProgramCost:
    """One program's share of a blast run under bpf stats."""

    name: str
    events: int
    run_time_ns: int
    recursion_misses: int

    @property
    def mean_ns(self) -> float:
        return self.run_time_ns / self.events if self.events else 0.0


@dataclass
class EventCost:
    """Per-program and overall cost of a configuration's programs over one blast run."""

    config: str
    datagrams: int  # received by the sink
    sent: int = 0  # by the clients: above datagrams, some were lost on the way
    programs: list[ProgramCost] = field(default_factory=list)
    traced: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(p.events for p in self.programs)

    @property
    def run_time_ns(self) -> int:
        return sum(p.run_time_ns for p in self.programs)

    @property
    def mean_ns(self) -> float:
        return self.run_time_ns / self.events if self.events else 0.0

    @property
    def events_per_datagram(self) -> float:
        return self.events / self.datagrams if self.datagrams else 0.0

    @property
    def ns_per_datagram(self) -> float:
        """BPF time per datagram received by the sink."""
        return self.run_time_ns / self.datagrams if self.datagrams else 0.0


@dataclass
class Attached:
    """The programs a configuration runs (none for ``none``) and the tracer, if any."""

    programs: list[Program]
    tracer: Tracer | None = None


def chosen_programs(choice: HookChoice) -> set[str]:
    return {p for c in choice.chosen.values() if c for p in c.programs}


def check_floor_objects(names: set[str]) -> None:
    """The floor objects have each chosen program under stackprof's name and section.

    bpf/empty.bpf.c generates them from the same list as stackprof.bpf.c, for every
    hook kind, so only a stale build (an object older than programs.def) fails here."""
    with BPFObject(OBJECT) as real:
        want = {p.name: p.section for p in real.programs() if p.name in names}
    for path in FLOORS.values():
        with BPFObject(path) as floor:
            have = {p.name: p.section for p in floor.programs()}
        wrong = sorted(n for n, sec in want.items() if have.get(n) != sec)
        if wrong:
            raise SystemExit(f"{path} lacks or mis-sections {wrong}: stale build, run make -C bpf")


@contextlib.contextmanager
def attached(config: str, topo: Topology, choice: HookChoice) -> Iterator[Attached]:
    """Load and attach a configuration's programs for the duration of the block."""
    names = chosen_programs(choice)
    if config == "none":
        yield Attached([])
    elif config in FLOORS:
        with BPFObject(FLOORS[config]) as obj:
            obj.autoload_only(names)
            obj.load()
            # As the Tracer attaches its own: kprobes to the resolved (suffixed) symbols.
            for candidate in choice.chosen.values():
                if candidate:
                    attach_candidate(obj, candidate)
            yield Attached([p for p in obj.programs() if p.name in names])
    else:
        cfg = make_config(PORT, PORT, netns=list(topo.netns_inodes()))
        with Tracer(cfg, choice) as tracer:
            assert tracer.obj
            yield Attached([p for p in tracer.obj.programs() if p.name in names], tracer)


def blast(topo: Topology, seconds: float) -> WorkloadResult:
    with Workload(
        topo,
        clients=BLAST_CLIENTS,
        request_size=DATAGRAM,
        response_size=DATAGRAM,
        duration=seconds,
        server_cpu=BLAST_SINK_CPU,
        client_cpu=BLAST_CLIENT_CPU,
        port=PORT,
        mode="blast",
    ) as load:
        return load.wait()


def pingpong(topo: Topology, seconds: float) -> WorkloadResult:
    with Workload(
        topo,
        clients=PINGPONG_CLIENTS,
        request_size=PINGPONG_REQUEST,
        response_size=PINGPONG_RESPONSE,
        duration=seconds,
        server_cpu=PINGPONG_SERVER_CPU,
        client_cpu=PINGPONG_CLIENT_CPU,
        port=PORT,
        mode="pingpong",
    ) as load:
        return load.wait()


def measure(
    rnd: int,
    config: str,
    topo: Topology,
    choice: HookChoice,
    seconds: float,
    closed_loop: bool = True,
) -> RunFigures:
    """Blast, then (unless closed_loop is off: its figures stay 0) the closed loop."""
    with attached(config, topo, choice):
        thr = blast(topo, seconds)
        lat = pingpong(topo, seconds) if closed_loop else None
    fig = RunFigures(
        round=rnd,
        config=config,
        datagrams_per_s=thr.server_datagrams_per_s,
        blast_sent_per_s=thr.sent / thr.duration_s if thr.duration_s else 0.0,
        p50_us=0.0,
        p99_us=0.0,
        pingpong_per_s=0.0,
        timeouts=0,
    )
    if lat is not None:
        fig.p50_us = lat.rtt.get_value_at_percentile(50) / 1e3
        fig.p99_us = lat.rtt.get_value_at_percentile(99) / 1e3
        fig.pingpong_per_s = lat.received / lat.duration_s if lat.duration_s else 0.0
        fig.timeouts = lat.timeouts
    return fig


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the block only (it costs ~8% throughput), then restored."""
    previous = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1")
    try:
        yield
    finally:
        BPF_STATS.write_text(previous)


def _path_counters(tracer: Tracer) -> dict[str, int]:
    """stackprof's own request-path counters: proof that it traced, not just filtered."""
    assert tracer.stats is not None
    row = tracer.stats.path_counters[abi.PATHS.index("request")]
    return {name: int(row[i]) for i, name in enumerate(abi.PATH_COUNTERS)}


def event_cost(config: str, topo: Topology, choice: HookChoice, seconds: float) -> EventCost:
    """Per-program run_cnt/run_time_ns deltas over one blast run."""
    with attached(config, topo, choice) as att:
        before = {p.name: p.info() for p in att.programs}
        result = blast(topo, seconds)
        after = {p.name: p.info() for p in att.programs}
        traced = _path_counters(att.tracer) if att.tracer else {}
    cost = EventCost(config, int(result.server.get("datagrams", 0)), result.sent, traced=traced)
    for name in sorted(after):
        a, b = after[name], before[name]
        cost.programs.append(
            ProgramCost(
                name,
                a.run_cnt - b.run_cnt,
                a.run_time_ns - b.run_time_ns,
                a.recursion_misses - b.recursion_misses,
            )
        )
    return cost


def foreign_tracing_programs() -> list[str]:
    """Tracing programs someone else has loaded: they run on our traffic too and skew the base."""
    try:
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=10
        ).stdout
        progs = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    kinds = {"tracing", "raw_tracepoint", "tracepoint", "kprobe"}
    return [f"{p['id']}:{p.get('name', '?')}" for p in progs if p.get("type") in kinds]


def foreign_workloads() -> list[str]:
    """Other runs' namespaces (``sp<pid>-cli``): their load shares our two CPUs."""
    own = f"{PREFIX}{os.getpid()}-"
    with contextlib.suppress(FileNotFoundError):
        return sorted(n for n in os.listdir(NETNS_DIR) if _NS.match(n) and not n.startswith(own))
    return []


def disturbances() -> list[str]:
    """What else is running that skews the figures (empty when the machine is ours)."""
    found = [f"tracing program {p}" for p in foreign_tracing_programs()]
    return found + [f"namespace {n}" for n in foreign_workloads()]


def wait_quiet(limit_s: float) -> list[str]:
    """Wait (at most limit_s) until nobody else traces or runs a workload; what remains."""
    deadline = time.monotonic() + limit_s
    found = disturbances()
    while found and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        found = disturbances()
    return found


def rotated(rnd: int) -> list[str]:
    """This round's order: the configurations, rotated by the round number."""
    k = rnd % len(CONFIGS)
    return list(CONFIGS[k:] + CONFIGS[:k])


def _median(runs: list[RunFigures], config: str, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs if r.config == config)


def _spread(runs: list[RunFigures], config: str, attr: str) -> tuple[float, float]:
    values = [getattr(r, attr) for r in runs if r.config == config]
    return min(values), max(values)


def _loss(value: float, base: float) -> float | None:
    """Throughput lost against base, in percent; None when base received nothing."""
    return 100.0 * (1 - value / base) if base > 0 else None


def _latency_ratio(value: float, base: float) -> float | None:
    """None when either side has no round trip (a run too short for its clients to start,
    as under emulation): an RTT is never 0."""
    return value / base if value > 0 and base > 0 else None


def _over_empty(loss: float | None, empty: float | None) -> float | None:
    """A loss in units of empty's; None when empty lost nothing (or nothing was measured)."""
    return loss / empty if loss is not None and empty is not None and empty > 0 else None


def paired_loss(runs: list[RunFigures], config: str) -> float | None:
    """Median over rounds of the loss against the same round's ``none``: less drift-prone."""
    by_round = {(r.round, r.config): r.datagrams_per_s for r in runs}
    rounds = sorted({r.round for r in runs})
    losses = [_loss(by_round[n, config], by_round[n, "none"]) for n in rounds]
    known = [x for x in losses if x is not None]
    return statistics.median(known) if known else None


def summarise(runs: list[RunFigures]) -> dict[str, Any]:
    """Medians over rounds per configuration, and the ratios against no tracing (None
    where ``none`` has nothing to compare against)."""
    med = {
        c: {a: _median(runs, c, a) for a in ("datagrams_per_s", "p50_us", "p99_us")}
        for c in CONFIGS
    }
    base = med["none"]
    loss = {c: _loss(med[c]["datagrams_per_s"], base["datagrams_per_s"]) for c in CONFIGS}
    empty = loss["empty"]
    return {
        "median": med,
        "spread_datagrams_per_s": {c: _spread(runs, c, "datagrams_per_s") for c in CONFIGS},
        "throughput_loss_pct": {c: loss[c] for c in TRACED},
        "paired_loss_pct": {c: paired_loss(runs, c) for c in TRACED},
        "loss_vs_empty": {c: _over_empty(loss[c], empty) for c in ("clock", "stackprof")},
        "p50_ratio": {c: _latency_ratio(med[c]["p50_us"], base["p50_us"]) for c in TRACED},
        "p99_ratio": {c: _latency_ratio(med[c]["p99_us"], base["p99_us"]) for c in TRACED},
    }


def noise_pct(summary: dict[str, Any]) -> float | None:
    """The spread of ``none`` over the rounds, in percent of its median: the noise gauge."""
    lo, hi = summary["spread_datagrams_per_s"]["none"]
    median = summary["median"]["none"]["datagrams_per_s"]
    return 100.0 * (hi - lo) / median if median > 0 else None


def verdicts(summary: dict[str, Any], cost: EventCost) -> dict[str, str]:
    """PASS or MISS per target; the throughput one only when the machine's noise is
    smaller than the floor it is compared against, and stackprof (which runs on the
    same hooks as empty, and more) lost at least as much as empty: else it is chance."""
    ratio = summary["loss_vs_empty"]["stackprof"]
    floor = summary["throughput_loss_pct"]["empty"]
    noise = noise_pct(summary)
    p50 = summary["p50_ratio"]["stackprof"]
    if noise is None:
        throughput = "n/a (none received nothing)"
    elif ratio is None:
        throughput = "n/a (empty lost nothing: noise)"
    elif noise >= floor:
        throughput = f"inconclusive (none spreads {noise:.1f}%, empty's loss is {floor:.1f}%)"
    elif ratio < 1:
        throughput = "inconclusive (stackprof lost less than empty: noise)"
    else:
        throughput = _verdict(ratio <= MAX_LOSS_VS_EMPTY)
    return {
        f"throughput loss <= {MAX_LOSS_VS_EMPTY} x empty": throughput,
        f"mean ns/event <= {MAX_NS_PER_EVENT:.0f}": _verdict(cost.mean_ns <= MAX_NS_PER_EVENT),
        f"closed-loop p50 <= {MAX_P50_RATIO}x": (
            "n/a (no closed-loop round trips: --blast-only, or runs too short)"
            if p50 is None
            else _verdict(p50 <= MAX_P50_RATIO)
        ),
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_round(fig: RunFigures, closed_loop: bool = True) -> None:
    latency = (
        f"closed loop p50 {fig.p50_us:7.1f} us p99 {fig.p99_us:8.1f} us  "
        f"({fig.pingpong_per_s / 1e3:.1f}K rt/s, {fig.timeouts} timeouts)"
        if closed_loop
        else "closed loop skipped (--blast-only)"
    )
    print(
        f"  round {fig.round} {fig.config:<9} blast {fig.datagrams_per_s / 1e3:7.1f}K dgram/s "
        f"(sent {fig.blast_sent_per_s / 1e3:6.1f}K/s)   {latency}",
        flush=True,
    )


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def print_summary(summary: dict[str, Any]) -> None:
    med, spread = summary["median"], summary["spread_datagrams_per_s"]
    print("\nMedians over rounds")
    print(
        f"  {'config':<10}{'dgram/s':>10}{'min..max':>20}{'loss':>8}"
        f"{'p50 us':>10}{'p99 us':>10}{'p50 x':>8}{'p99 x':>8}"
    )
    for c in CONFIGS:
        lo, hi = spread[c]
        loss = summary["throughput_loss_pct"].get(c)
        p50r, p99r = summary["p50_ratio"].get(c, 1.0), summary["p99_ratio"].get(c, 1.0)
        print(
            f"  {c:<10}{med[c]['datagrams_per_s'] / 1e3:9.1f}K"
            f"{f'{lo / 1e3:.1f}K..{hi / 1e3:.1f}K':>20}"
            f"{'' if c == 'none' else _fmt(loss, '+.1f', '%'):>8}"
            f"{med[c]['p50_us']:10.1f}{med[c]['p99_us']:10.1f}"
            f"{_fmt(p50r, '.3f'):>8}{_fmt(p99r, '.3f'):>8}"
        )
    paired = summary["paired_loss_pct"]
    print(
        "  loss against the same round's none, median: "
        + ", ".join(f"{c} {_fmt(paired[c], '+.1f', '%')}" for c in TRACED)
    )
    for config, ratio in summary["loss_vs_empty"].items():
        print(
            f"  {config} loss / empty loss: "
            + ("n/a (empty lost nothing)" if ratio is None else f"{ratio:.2f}")
        )


def print_cost(cost: EventCost) -> None:
    print(
        f"\nns per hook event, {cost.config} (one blast run, kernel bpf stats; "
        f"{cost.sent} datagrams sent, {cost.datagrams} received)"
    )
    print(f"  {'program':<28}{'events':>12}{'mean ns':>10}{'share':>8}{'recursion':>11}")
    for p in sorted(cost.programs, key=lambda p: -p.run_time_ns):
        share = 100.0 * p.run_time_ns / cost.run_time_ns if cost.run_time_ns else 0.0
        print(f"  {p.name:<28}{p.events:>12}{p.mean_ns:10.1f}{share:7.1f}%{p.recursion_misses:>11}")
    print(
        f"  {'all':<28}{cost.events:>12}{cost.mean_ns:10.1f}   "
        f"({cost.events_per_datagram:.1f} events, {cost.ns_per_datagram:.0f} ns "
        "per datagram received)"
    )
    if cost.traced:
        print(f"  stackprof request-path counters: {cost.traced}")


def timestamp_ns(costs: list[EventCost]) -> float:
    """What one timestamp costs here: clock's mean per event less empty's."""
    by = {c.config: c for c in costs}
    return by["clock"].mean_ns - by["empty"].mean_ns


def print_clock(costs: list[EventCost]) -> None:
    by = {c.config: c for c in costs}
    print(
        f"\none timestamp (bpf_ktime_get_ns) on these hooks: {timestamp_ns(costs):.1f} ns per "
        f"event (clock {by['clock'].mean_ns:.1f} - empty {by['empty'].mean_ns:.1f})"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    choice = choose_hooks(args.hooks, skip=unused_boundaries("udp"))
    missing = choice.missing_required()
    if missing:
        why = "; ".join(
            f"{b}: {', '.join(choice.refused.get(b, [])) or 'no candidate of the kinds allowed'}"
            for b in missing
        )
        raise SystemExit(f"no working hook for {', '.join(missing)} ({why})")
    check_floor_objects(chosen_programs(choice))
    foreign = wait_quiet(args.wait_quiet)
    if foreign:
        print(f"WARNING: not alone on this machine, figures are skewed: {foreign}")
    print(f"hooks: {', '.join(c.label for c in choice.chosen.values() if c)}")
    closed_loop = (
        "skipped (--blast-only)"
        if args.blast_only
        else f"{PINGPONG_CLIENTS} clients {PINGPONG_REQUEST}/{PINGPONG_RESPONSE} B, server and "
        f"clients on CPU {PINGPONG_SERVER_CPU}"
    )
    print(
        f"blast: {BLAST_CLIENTS} clients x {DATAGRAM} B on CPU {BLAST_CLIENT_CPU}, sink on CPU "
        f"{BLAST_SINK_CPU}; closed loop: {closed_loop}; MTU {MTU}, {args.seconds} s per run",
        flush=True,
    )
    runs: list[RunFigures] = []
    with Topology(MTU) as topo:
        for rnd in range(args.rounds):
            for config in rotated(rnd):
                fig = measure(rnd, config, topo, choice, args.seconds, not args.blast_only)
                print_round(fig, not args.blast_only)
                runs.append(fig)
        with bpf_stats():
            costs = [event_cost(c, topo, choice, args.seconds) for c in ("stackprof", *FLOORS)]
    summary = summarise(runs)
    print_summary(summary)
    for cost in costs:
        print_cost(cost)
    print_clock(costs)
    checks = verdicts(summary, costs[0])
    print("\nTargets")
    for name, verdict in checks.items():
        print(f"  {name:<36} {verdict}")
    foreign_after = disturbances()
    if foreign_after:
        print(f"WARNING: not alone at the end either: {foreign_after}")
    return {
        "kernel": platform.release(),
        "started_at": args.started_at,
        "params": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "closed_loop": not args.blast_only,
            "hook_kinds": list(args.hooks),
            "mtu": MTU,
            "datagram": DATAGRAM,
            "blast_clients": BLAST_CLIENTS,
            "blast_sink_cpu": BLAST_SINK_CPU,
            "blast_client_cpu": BLAST_CLIENT_CPU,
            "pingpong_clients": PINGPONG_CLIENTS,
            "pingpong_sizes": [PINGPONG_REQUEST, PINGPONG_RESPONSE],
            "pingpong_server_cpu": PINGPONG_SERVER_CPU,
            "pingpong_client_cpu": PINGPONG_CLIENT_CPU,
        },
        "hooks": choice.labels(),
        "disturbances": {"start": foreign, "end": foreign_after},
        "runs": [asdict(r) for r in runs],
        "summary": {**summary, "none_spread_pct": noise_pct(summary)},
        "event_cost": [
            {
                "config": c.config,
                "datagrams": c.datagrams,
                "sent": c.sent,
                "events": c.events,
                "run_time_ns": c.run_time_ns,
                "mean_ns": c.mean_ns,
                "events_per_datagram": c.events_per_datagram,
                "ns_per_datagram": c.ns_per_datagram,
                "traced": c.traced,
                "programs": [{**asdict(p), "mean_ns": p.mean_ns} for p in c.programs],
            }
            for c in costs
        ],
        "timestamp_ns": timestamp_ns(costs),
        "targets": checks,
    }


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"hook kinds must be among {','.join(KINDS)}")
    return kinds


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomically: a temporary file in the same folder, then renamed over path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # as a plain open would make it, not mkstemp's 0600
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four configurations")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--blast-only",
        action="store_true",
        help="skip the closed-loop (latency) runs: a shorter run, no p50/p99 figures",
    )
    parser.add_argument(
        "--hooks",
        type=_kinds,
        default=KINDS,
        metavar="KINDS",
        help=f"hook kinds allowed, in preference order (default {','.join(KINDS)})",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S s for other tracers and workloads to finish",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or not 0 < args.seconds <= 60:
        parser.error("--rounds must be >= 1 and --seconds in (0, 60]")
    if args.json and not args.json.absolute().parent.is_dir():
        parser.error(f"--json: no folder {args.json.absolute().parent}")  # not after the run
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise Stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (BPF, network namespaces, sysctl)", file=sys.stderr)
        return 2
    args.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        doc = run(args)
    except (KeyboardInterrupt, Stop):
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
