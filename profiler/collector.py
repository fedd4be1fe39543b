"""Reads the kernel's buckets and counters into a Run.

The BPF side aggregates; this side copies one mmapped struct per refresh and
turns buckets into HDR histograms, so its cost does not grow with traffic.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from profiler import abi
from profiler.loader import Tracer
from profiler.paths import DATAGRAM_PATHS
from profiler.run import Run, histogram_from_buckets
from profiler.unobserved import note_unobserved

INCOMPLETE_AGE_NS = 1_000_000_000
# Causes of datagrams dropped whole, and of fragments dropped (abi.DROP_CAUSES less
# those that cannot be: a whole datagram is never a duplicate; a fragment whose
# reassembly timed out ends its datagram, counted as incomplete).
DROPPED = [c for c in abi.DROP_CAUSES if c not in ("incomplete", "duplicate")]
FRAGMENT_DROPS = [c for c in abi.DROP_CAUSES if c != "incomplete"]


def copy_stats(tracer: Tracer) -> Any:
    """A consistent-enough copy of the live statistics (one memmove)."""
    assert tracer.stats is not None
    snapshot = abi.Stats()
    ctypes.memmove(ctypes.byref(snapshot), ctypes.byref(tracer.stats), ctypes.sizeof(snapshot))
    return snapshot


def live_flights(tracer: Tracer) -> list[Any]:
    """Copies of the occupied slots of the kernel's in-flight table (one memmove,
    then numpy finds the few taken among the table's thousands of slots)."""
    import numpy as np  # here, not above: loading it would delay attaching the probes

    assert tracer.flights is not None
    table = np.ctypeslib.as_array(type(tracer.flights).from_buffer_copy(tracer.flights))
    taken = np.flatnonzero(table["key"]["proto"])
    slot = abi.FlightSlot
    return [slot.from_buffer_copy(table[i].tobytes()) for i in taken]


def flight_complete(key: Any, flight: Any, ring_request: bool = False) -> bool:
    """Whether a flight's datagram became whole (bpf/flights.bpf.h's flight_complete):
    reassembly produced it (ip_defrag returned it, it reached udp_rcv or a socket's
    queue), or it was never fragmented and reached the stack. Its last fragment
    arriving is not enough: a first or middle one may never have. A ring receiver's
    request is whole for it once its last fragment is at the stack (it reassembles
    in user space)."""
    if flight.t_enq or flight.t_defrag or flight.t_udp:
        return True
    return bool(flight.t_last) and (not key.fragmented or ring_request)


def flights_left(
    tracer: Tracer, older_than_ns: int = INCOMPLETE_AGE_NS
) -> dict[str, dict[str, int]]:
    """Per path, datagrams still in the flight table: ``undelivered`` (whole but never
    read), and among those quiet for older_than_ns, ``incomplete`` (fragmented, never
    made whole by reassembly: a first or middle fragment missing, even if the last
    arrived) and ``in_transit`` (unfragmented, never at the receiver's stack);
    ``in_flight`` counts them all."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    ring = bool(tracer.config.ring_receiver)
    names = ("incomplete", "undelivered", "in_transit", "in_flight")
    left = {p: dict.fromkeys(names, 0) for p in abi.PATHS}
    for slot in live_flights(tracer):
        key, value = slot.key, slot.f
        if value.path >= len(abi.PATHS):
            continue
        path = abi.PATHS[value.path]
        row = left[path]
        row["in_flight"] += 1
        if flight_complete(key, value, ring and path == "request"):
            row["undelivered"] += 1
        elif now - max(value.t_stack, value.t_last, value.t_queue, value.t_rx) >= older_than_ns:
            row["incomplete" if key.fragmented else "in_transit"] += 1
    return left


def fill_run(run: Run, stats: Any, recursion_misses: int = 0) -> Run:
    """Put a statistics copy's histograms and counters into run. Per path, beside the
    kernel's counters: ``incomplete`` (reassemblies the kernel gave up on; the collector
    adds those still pending), ``dropped_<cause>`` (datagrams dropped whole, by the
    kernel's reason) and ``fragments_dropped_<cause>``."""
    for path in abi.PATHS:
        for stage in abi.STAGES:
            hist_row = abi.hist_index(path, stage)
            counts = tuple(stats.hist[hist_row])
            if any(counts):
                run.stages[(path, stage)] = histogram_from_buckets(counts)
                run.sums[(path, stage)] = int(stats.sum[hist_row])
        run.frags[path] = histogram_from_buckets(tuple(stats.hist[abi.hist_index(path, "frags")]))
        index = abi.PATHS.index(path)
        counters = stats.path_counters[index]
        kernel = {name: int(counters[i]) for i, name in enumerate(abi.PATH_COUNTERS)}
        row = run.datagrams.setdefault(path, {})
        row.update({f"kernel_{k}": v for k, v in kernel.items()})
        row["traced"] = kernel["delivered"]
        row["sent"] = kernel["sent"]  # until the applications' own count replaces it
        row["both_ends"] = kernel["delivered"] - kernel["receive_only"]
        row["receive_only"] = kernel["receive_only"]
        row["send_only"] = kernel["send_only"]
        lost = {c: int(stats.lost[index][i]) for i, c in enumerate(abi.DROP_CAUSES)}
        frags = {c: int(stats.frags_dropped[index][i]) for i, c in enumerate(abi.DROP_CAUSES)}
        row["incomplete"] = lost["incomplete"]
        row.update({f"dropped_{c}": lost[c] for c in DROPPED})
        row.update({f"fragments_dropped_{c}": frags[c] for c in FRAGMENT_DROPS})
    run.batch = histogram_from_buckets(tuple(stats.hist[abi.hist_index("request", "batch")]))
    run.missed.update({name: int(stats.missed[i]) for i, name in enumerate(abi.MISSES)})
    run.missed["recursion_misses"] = recursion_misses
    return run


def stats_delta(now: Any, before: Any) -> Any:
    """What the kernel counted between two statistics copies (every field is a u64)."""
    import numpy as np

    a = np.frombuffer(bytes(now), dtype=np.uint64)
    b = np.frombuffer(bytes(before), dtype=np.uint64)
    return abi.Stats.from_buffer_copy((a - b).tobytes())


def interval_run(before: Any, now: Any, meta: dict[str, Any]) -> Run:
    """A run of what was counted between two copies: its histograms and counters."""
    return fill_run(Run(meta=dict(meta)), stats_delta(now, before))


def collect(tracer: Tracer, run: Run, older_than_ns: int = INCOMPLETE_AGE_NS) -> Run:
    """Refresh run from the live kernel state, flights left in the map included.

    Flights neither delivered, dropped nor still in the map were evicted from the
    bounded flight table (or dropped on a pairing mismatch): counted as ``flights_lost``.
    A sampled run (--sample) starts flights for the datagrams sent less those sampled out."""
    fill_run(run, copy_stats(tracer), tracer.recursion_misses())
    evicted = 0
    for path, left in flights_left(tracer, older_than_ns).items():
        if path not in DATAGRAM_PATHS:
            continue
        row = run.datagrams[path]
        ended = row["incomplete"] + sum(row[f"dropped_{c}"] for c in DROPPED) + row["send_only"]
        row["incomplete"] += left["incomplete"]
        row["undelivered"] = left["undelivered"]
        row["in_transit"] = left["in_transit"]
        followed = row["kernel_sent"] - row["kernel_sampled_out"] + row["kernel_arrived"]
        evicted += max(0, followed - row["kernel_delivered"] - ended - left["in_flight"])
    run.missed["flights_lost"] = evicted
    note_unobserved(run)
    return run
