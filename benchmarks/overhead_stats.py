"""The overhead benchmark's kernel-side figures: BPF run time and events per datagram
(the kernel's own per-program counters, BPF stats), the timestamps stackprof takes per
datagram (counted by stampcount.bpf.o), and what else on the machine skews them.

BPF stats are held on by an fd (BPF_ENABLE_STATS) for one ping-pong run at a time, never
during the latency and throughput runs (they add two clock reads to every program run),
and go off when the fd closes, whatever ends the benchmark.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.overhead_configs import Attached
from benchmarks.overhead_load import Cell, Lab, LoadError, Udp
from profiler import resources
from profiler.libbpf import enable_stats, prog_info_by_id
from profiler.loader import HookChoice, Tracer, make_config
from servers.topology import NETNS_DIR, PREFIX

STAMPS_OBJECT = resources.bpf_object("stampcount")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
_NS = re.compile(rf"^{PREFIX}\d+-(cli|srv)$")
T = TypeVar("T")


class StampCounter(ctypes.Structure):
    """stampcount.bpf.o's .data.stamps section (bpf/stampcount.bpf.h)."""

    _fields_ = [("taken", ctypes.c_uint64)]


@dataclass
class ProgramCost:
    """One program's share of a run under BPF stats."""

    name: str
    events: int = 0
    run_time_ns: int = 0
    recursion_misses: int = 0

    @property
    def mean_ns(self) -> float:
        return self.run_time_ns / self.events if self.events else 0.0


@dataclass
class EventCost:
    """A configuration's programs over one ping-pong run: events and BPF time per datagram."""

    config: str
    round: int
    datagrams: int  # read by sockperf, both ways
    sent: int
    programs: list[ProgramCost] = field(default_factory=list)

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
        return self.run_time_ns / self.datagrams if self.datagrams else 0.0

    def row(self) -> dict[str, Any]:
        """Its figures without the programs (the JSON's event_cost_rounds)."""
        keys = ("events", "run_time_ns", "mean_ns", "events_per_datagram", "ns_per_datagram")
        return {
            "config": self.config,
            "round": self.round,
            "datagrams": self.datagrams,
            "sent": self.sent,
            **{k: getattr(self, k) for k in keys},
        }


@dataclass
class StampCount:
    """Timestamps stackprof's programs took over a ping-pong run, and its datagrams."""

    stamps: int
    datagrams: int

    @property
    def per_datagram(self) -> float:
        return self.stamps / self.datagrams if self.datagrams else 0.0


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """Every program's run time and count kept for the block only."""
    fd = enable_stats()
    try:
        yield
    finally:
        os.close(fd)


def snapshot(programs: dict[int, str]) -> dict[str, ProgramCost]:
    """Run count, time and recursion misses of each program, by name."""
    found: dict[str, ProgramCost] = {}
    for prog_id, name in programs.items():
        with contextlib.suppress(OSError):
            info = prog_info_by_id(prog_id)
            cost = found.setdefault(name, ProgramCost(name))
            cost.events += info.run_cnt
            cost.run_time_ns += info.run_time_ns
            cost.recursion_misses += info.recursion_misses
    return found


def windowed(lab: Lab, cell: Cell, seconds: int, read: Callable[[], T]) -> tuple[T, T, Udp]:
    """read() and the lab's UDP counters as sockperf's ping-pong test starts and ends: a
    window that leaves out its 2 s of start-up, when only others' traffic runs."""
    seen: dict[str, tuple[T, Udp]] = {}
    lab.pingpong(cell, seconds, lambda what: seen.__setitem__(what, (read(), lab.udp())))
    if set(seen) != {"start", "end"}:
        raise LoadError("sockperf did not say when its test started and ended")
    return seen["start"][0], seen["end"][0], seen["end"][1] - seen["start"][1]


def event_cost(att: Attached, lab: Lab, cell: Cell, seconds: int, rnd: int) -> EventCost:
    """One ping-pong under BPF stats: each program's counts over its test."""
    with bpf_stats():
        before, after, udp = windowed(lab, cell, seconds, lambda: snapshot(att.programs))
    cost = EventCost(att.config, rnd, udp.received, udp.sent)
    for name in sorted(after):
        a, b = after[name], before.get(name, ProgramCost(name))
        cost.programs.append(
            ProgramCost(
                name,
                a.events - b.events,
                a.run_time_ns - b.run_time_ns,
                a.recursion_misses - b.recursion_misses,
            )
        )
    return cost


def count_stamps(lab: Lab, choice: HookChoice, cell: Cell, seconds: int) -> StampCount:
    """stackprof's programs as attach runs them, each timestamp also counted, over one
    ping-pong: the timestamps per datagram its design takes, measured rather than assumed."""
    netns = list(lab.topo.netns_inodes())
    with Tracer(make_config(lab.port, lab.port, netns=netns), choice, STAMPS_OBJECT) as tracer:
        assert tracer.obj is not None
        counter = tracer.obj.global_map(".data.stamps").mmapped(StampCounter)
        before, after, udp = windowed(lab, cell, seconds, lambda: int(counter.taken))
    return StampCount(after - before, udp.received)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def combined(costs: list[EventCost]) -> dict[str, object]:
    """One configuration over its rounds: totals summed, per-event and per-datagram
    figures the medians of the rounds'."""
    programs: dict[str, ProgramCost] = {}
    for cost in costs:
        for p in cost.programs:
            total = programs.setdefault(p.name, ProgramCost(p.name))
            total.events += p.events
            total.run_time_ns += p.run_time_ns
            total.recursion_misses += p.recursion_misses
    return {
        "config": costs[0].config,
        "rounds": len(costs),
        "datagrams": sum(c.datagrams for c in costs),
        "sent": sum(c.sent for c in costs),
        "events": sum(c.events for c in costs),
        "run_time_ns": sum(c.run_time_ns for c in costs),
        "mean_ns": _median([c.mean_ns for c in costs]),
        "events_per_datagram": _median([c.events_per_datagram for c in costs]),
        "ns_per_datagram": _median([c.ns_per_datagram for c in costs]),
        "programs": [
            {"name": p.name, "events": p.events, "run_time_ns": p.run_time_ns,
             "recursion_misses": p.recursion_misses, "mean_ns": p.mean_ns}
            for p in sorted(programs.values(), key=lambda p: p.name)
        ],
    }  # fmt: skip


def foreign_tracing_programs(own: Collection[int]) -> list[str]:
    """Tracing programs someone else has loaded: they run on our traffic too."""
    try:
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30
        ).stdout
        progs = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    kinds = {"tracing", "raw_tracepoint", "tracepoint", "kprobe"}
    return [
        f"{p['id']}:{p.get('name', '?')}"
        for p in progs
        if p.get("type") in kinds and p["id"] not in own
    ]


def foreign_workloads() -> list[str]:
    """Other runs' namespaces (``sp<pid>-cli``): their load shares our CPUs."""
    mine = f"{PREFIX}{os.getpid()}-"
    with contextlib.suppress(FileNotFoundError):
        return sorted(n for n in os.listdir(NETNS_DIR) if _NS.match(n) and not n.startswith(mine))
    return []


def disturbances(own: Collection[int] = ()) -> list[str]:
    """What else runs that skews the figures (empty when the machine is ours)."""
    found = [f"tracing program {p}" for p in foreign_tracing_programs(own)]
    found += [f"namespace {n}" for n in foreign_workloads()]
    with contextlib.suppress(OSError):
        if BPF_STATS.read_text().strip() != "0":
            found.append("kernel.bpf_stats_enabled=1 (every program runs slower)")
    return found


def wait_quiet(limit_s: float) -> list[str]:
    """Wait (at most limit_s) until nobody else traces or runs a workload; what remains."""
    deadline = time.monotonic() + limit_s
    found = disturbances()
    while found and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        found = disturbances()
    return found
