"""One tracing session: hooks chosen, BPF attached, the kernel's figures read into a Run.

The pieces every session is made of (hooks or a clear refusal, the run's metadata,
the once-a-second refresh, Ctrl-C, the last collection at rest) and ``attach``,
which watches traffic stackprof did not start. ``trace``, which also builds the
private topology and runs the reference workload, is ``servers.lab``: the profiler
itself never imports the servers.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from profiler import phases
from profiler.collector import collect, copy_stats, interval_run
from profiler.errors import SessionError
from profiler.hooks import KINDS, STAGE_HELP, UNTRACED, stages_for, unused_boundaries
from profiler.loader import HookChoice, Tracer, choose_hooks, make_config
from profiler.run import Run

Update = Callable[[Run, dict[str, Any]], None]
Interval = Callable[[Run], None]


def hooks_or_fail(
    kinds: tuple[str, ...],
    skip: tuple[str, ...] = (),
    transport: str = "attach",
    detail: str = "full",
    check: bool = True,
) -> HookChoice:
    """Choose hooks (none where the transport, or a lean run, has no use for them);
    refuse to run without the boundaries every stage needs. check=False: the caller
    loads the choice in a Tracer next, which proves a remembered one (loader.choose_hooks)."""
    choice = choose_hooks(kinds, skip=skip + unused_boundaries(transport, detail), check=check)
    missing = choice.missing_required()
    if missing:
        raise SessionError(
            f"cannot trace: no working hook for {', '.join(missing)} "
            f"(tried kinds {','.join(kinds)}; run 'stackprof doctor')"
        )
    return choice


def base_meta(
    choice: HookChoice, transport: str, detail: str = "full", one_sided: bool = False
) -> dict[str, Any]:
    """What every run says of itself; one_sided where datagrams may be followed from
    one end only (the traced host is not every namespace they cross)."""
    stages = stages_for(transport, detail, one_sided)
    unused = unused_boundaries(transport, detail)
    left_out = set(unused) - set(unused_boundaries(transport))  # by lean, not worth listing
    return {
        "kernel": platform.release(),
        "transport": transport,
        "detail": detail,
        "stages": list(stages),
        "hooks": {n: label for n, label in choice.labels().items() if n not in unused},
        "unobserved": list(stages) if transport in UNTRACED else choice.unobserved(stages),
        "untraced": UNTRACED.get(transport),
        # lean hooks no driver transmit, where a request or response leaves
        "residence": transport not in UNTRACED and detail != "lean",
        "hooks_refused": {b: why for b, why in choice.refused.items() if b not in left_out},
        "stage_help": STAGE_HELP,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _status(run: Run, started: float, duration: float) -> dict[str, Any]:
    """The live header's clock: it stops at the duration while the last replies drain."""
    elapsed = min(time.monotonic() - started, duration)
    shown = duration if math.isfinite(duration) else 0.0
    return {**run.meta, "elapsed_s": round(elapsed, 1), "duration_s": shown}


def watch(
    tracer: Tracer, run: Run, duration: float, done: Callable[[], bool], on_update: Update
) -> None:
    """Refresh run from the kernel about once a second until done() or duration.

    Each refresh replaces the run's histograms, and an hdrh histogram is a reference
    cycle (it and its encoder hold each other, 256 KiB of counts each) that only the
    cycle collector frees, rarely: without a collection each refresh, a trace's memory
    climbed ~20 MiB a minute for minutes (benchmarks/soak.py). A collection costs a
    few ms a second, in user space only."""
    started = time.monotonic()
    while not done() and time.monotonic() - started < duration + 5:
        time.sleep(min(1.0, max(0.05, duration + 5 - (time.monotonic() - started))))
        collect(tracer, run)
        on_update(run, _status(run, started, duration))
        gc.collect()


@contextlib.contextmanager
def interruptible(run: Run) -> Iterator[None]:
    """Ctrl-C (or SIGTERM, SIGHUP) ends the measuring early but keeps what was
    measured: the run says it was interrupted, and the caller saves it."""
    try:
        yield
    except KeyboardInterrupt:
        run.meta["interrupted"] = True


def finish(tracer: Tracer, run: Run) -> Run:
    """Last collection, with the programs detached first so that histograms and
    counters are read at rest (traffic may go on): counters, and fragmented
    datagrams that never completed."""
    assert tracer.obj is not None
    tracer.disarm()
    tracer.obj.detach()
    if tracer.choice.reproved:  # the remembered hooks failed: say which ones ran
        meta = run.meta
        fresh = base_meta(
            tracer.choice,
            meta["transport"],
            meta.get("detail", "full"),
            "tx_frags" in meta["stages"],
        )
        run.meta.update({k: fresh[k] for k in ("hooks", "unobserved", "hooks_refused")})
    return collect(tracer, run, older_than_ns=0)


@dataclass
class AttachOptions:
    """Filters for ``stackprof attach``: which existing traffic to watch."""

    port_lo: int
    port_hi: int
    duration: float = 10.0
    pid: int | None = None
    netns: list[int] | None = None
    cgroup_id: int | None = None
    kinds: tuple[str, ...] = KINDS
    skip: tuple[str, ...] = ()
    save_every: float = 600.0
    gone: Callable[[], str | None] | None = None  # why a filtered target went away
    on_attached: Callable[[Run], None] | None = None  # the probes are attached
    sample: int = 1  # follow 1 datagram in this many
    detail: str = "full"  # or lean: hooks.LEAN_BOUNDARIES only


def since_process_start() -> float:
    """Seconds since this process started (its start in /proc, in clock ticks since
    boot, against the uptime): a start-up time that counts the imports too."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as stat:
        started = int(stat.read().rsplit(")", 1)[1].split()[19]) / ticks
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0]) - started


class Intervals:
    """A long run cut into intervals: every ``every`` seconds the figures gained
    since the last cut go to ``on_interval`` as a run of their own, so a crash
    loses at most one interval and the intervals merge back into the whole."""

    def __init__(self, tracer: Tracer, meta: dict[str, Any], every: float, on_interval: Interval):
        self.tracer, self.meta, self.every, self.on_interval = tracer, meta, every, on_interval
        self.last = copy_stats(tracer)
        self.since = time.monotonic()
        self.started_at = time.time()
        self.index = 0

    def due(self) -> bool:
        return time.monotonic() - self.since >= self.every

    def cut(self) -> None:
        """Hand over the interval that ends now."""
        now = copy_stats(self.tracer)
        length = time.monotonic() - self.since
        meta = {
            **self.meta,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at)),
            "duration_s": round(length, 3),
            "interval": self.index,
        }
        self.on_interval(interval_run(self.last, now, meta))
        self.last, self.since, self.started_at = now, time.monotonic(), time.time()
        self.index += 1


def attach(opts: AttachOptions, on_update: Update, on_interval: Interval | None = None) -> Run:
    """Trace datagrams to/from the port range that the filtered senders send. With
    duration 0 it runs until stopped, handing each ``save_every`` interval to
    ``on_interval`` (the last one when stopped)."""
    choice = hooks_or_fail(opts.kinds, opts.skip, detail=opts.detail, check=False)
    run = Run(
        meta={
            **base_meta(choice, "attach", opts.detail, one_sided=True),
            "mtu": 0,
            "ports": [opts.port_lo, opts.port_hi],
            "pid": opts.pid,
            "netns": opts.netns,
            "scope": opts.netns or "every network namespace on this kernel",
            "cgroup_id": opts.cgroup_id,
            "duration_s": opts.duration,
            "sample": opts.sample,
        }
    )
    config = make_config(
        opts.port_lo,
        opts.port_hi,
        netns=opts.netns,
        tgid=opts.pid,
        cgroup_id=opts.cgroup_id,
        residence=bool(run.meta["residence"]),
        sample=opts.sample,
        lean=opts.detail == "lean",
    )
    duration = opts.duration or math.inf
    started = time.monotonic()
    ended: list[str] = []

    def done() -> bool:
        """The duration is over, or a target went away (the run ends with what it has)."""
        why = opts.gone() if opts.gone else None
        if why:
            ended.append(f"{why} after {time.monotonic() - started:.1f} s")
        return bool(why) or time.monotonic() - started >= duration

    with Tracer(config, choice) as tracer:
        run.meta["attached_after_s"] = round(since_process_start(), 3)
        run.meta["hooks_cached"] = choice.cached and not tracer.choice.reproved
        if opts.on_attached:
            opts.on_attached(run)
        phases.reached("attach")
        cuts = Intervals(tracer, run.meta, opts.save_every, on_interval) if on_interval else None

        def update(current: Run, status: dict[str, Any]) -> None:
            on_update(current, status)
            if cuts and cuts.due():
                cuts.cut()

        with interruptible(run):
            phases.reached("load")
            watch(tracer, run, duration, done, update)
        finish(tracer, run)
        if ended:
            run.meta["ended"] = ended[0]
        if cuts:
            cuts.cut()
    return run
