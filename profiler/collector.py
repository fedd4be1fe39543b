"""Reads the kernel's buckets and counters into a Run.

The BPF side aggregates; this side copies one mmapped struct per refresh and
turns buckets into HDR histograms, so its cost does not grow with traffic.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np

from profiler import abi
from profiler.loader import Tracer
from profiler.run import Run, histogram_from_buckets

INCOMPLETE_AGE_NS = 1_000_000_000


def copy_stats(tracer: Tracer) -> Any:
    """A consistent-enough copy of the live statistics (one memmove)."""
    assert tracer.stats is not None
    snapshot = abi.Stats()
    ctypes.memmove(ctypes.byref(snapshot), ctypes.byref(tracer.stats), ctypes.sizeof(snapshot))
    return snapshot


def live_flights(tracer: Tracer) -> list[Any]:
    """Copies of the occupied slots of the kernel's in-flight table (one memmove,
    then numpy finds the few taken among the table's thousands of slots)."""
    assert tracer.flights is not None
    table = np.ctypeslib.as_array(type(tracer.flights).from_buffer_copy(tracer.flights))
    taken = np.flatnonzero(table["key"]["proto"])
    slot = abi.FlightSlot
    return [slot.from_buffer_copy(table[i].tobytes()) for i in taken]


def flights_left(
    tracer: Tracer, older_than_ns: int = INCOMPLETE_AGE_NS
) -> dict[str, dict[str, int]]:
    """Per path, datagrams still in the flight table: ``incomplete`` (first fragment
    arrived, reassembly never completed, older than older_than_ns), ``undelivered``
    (complete but never read) and ``in_flight`` (all of them)."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    left = {p: {"incomplete": 0, "undelivered": 0, "in_flight": 0} for p in abi.PATHS}
    for slot in live_flights(tracer):
        key, value = slot.key, slot.f
        if value.path >= len(abi.PATHS):
            continue
        row = left[abi.PATHS[value.path]]
        row["in_flight"] += 1
        if value.t_last:
            row["undelivered"] += 1
        elif key.fragmented and value.t_stack and now - value.t_stack >= older_than_ns:
            row["incomplete"] += 1
    return left


def fill_run(run: Run, stats: Any, recursion_misses: int = 0) -> Run:
    """Put a statistics copy's histograms and counters into run."""
    for path in abi.PATHS:
        for stage in abi.STAGES:
            counts = tuple(stats.hist[abi.hist_index(path, stage)])
            if any(counts):
                run.stages[(path, stage)] = histogram_from_buckets(counts)
        run.frags[path] = histogram_from_buckets(tuple(stats.hist[abi.hist_index(path, "frags")]))
        counters = stats.path_counters[abi.PATHS.index(path)]
        kernel = {name: int(counters[i]) for i, name in enumerate(abi.PATH_COUNTERS)}
        row = run.datagrams.setdefault(path, {})
        row.update({f"kernel_{k}": v for k, v in kernel.items()})
        row["traced"] = kernel["delivered"]
        row["sent"] = kernel["sent"]  # until the applications' own count replaces it
    run.batch = histogram_from_buckets(tuple(stats.hist[abi.hist_index("request", "batch")]))
    run.missed.update({name: int(stats.missed[i]) for i, name in enumerate(abi.MISSES)})
    run.missed["recursion_misses"] = recursion_misses
    return run


def stats_delta(now: Any, before: Any) -> Any:
    """What the kernel counted between two statistics copies (every field is a u64)."""
    a = np.frombuffer(bytes(now), dtype=np.uint64)
    b = np.frombuffer(bytes(before), dtype=np.uint64)
    return abi.Stats.from_buffer_copy((a - b).tobytes())


def interval_run(before: Any, now: Any, meta: dict[str, Any]) -> Run:
    """A run of what was counted between two copies: its histograms and counters."""
    return fill_run(Run(meta=dict(meta)), stats_delta(now, before))


def collect(tracer: Tracer, run: Run, older_than_ns: int = INCOMPLETE_AGE_NS) -> Run:
    """Refresh run from the live kernel state, flights left in the map included.

    Flights neither delivered nor still in the map were evicted from the
    bounded flight table (or dropped on a pairing mismatch): counted as ``flights_lost``."""
    fill_run(run, copy_stats(tracer), tracer.recursion_misses())
    evicted = 0
    for path, left in flights_left(tracer, older_than_ns).items():
        row = run.datagrams[path]
        row["incomplete"] = left["incomplete"]
        row["undelivered"] = left["undelivered"]
        evicted += max(0, row["kernel_sent"] - row["kernel_delivered"] - left["in_flight"])
    run.missed["flights_lost"] = evicted
    return run
