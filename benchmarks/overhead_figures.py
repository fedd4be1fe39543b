"""The overhead benchmark's figures: medians over rounds, what each configuration adds to
``none``, and a verdict per target of issue 11.

A latency verdict compares two added latencies in µs (``value`` against ``limit`` times
a base) and is ``inconclusive`` only when ``none``'s own spread across rounds (max − min
of its p50, µs) is larger than the difference between the two: then the machine's drift
alone could flip it. The other targets (BPF ns, events, start time, memory) are not
timings of the traffic and get ``met`` or ``not met``. A target whose configuration this
stackprof lacks (or whose figure this run did not measure: ``--blast-only``) says
``unavailable``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.overhead_load import MSG_SIZE, Cell

VERDICTS = ("met", "not met", "inconclusive")
UNAVAILABLE = "unavailable"
# Targets (issue 11), all ratios to floors measured in the same run but the last three.
FLOOR_RATIO = 1.3  # full detail: BPF ns per datagram <= 1.3 x its design floor
SAMPLE_RATIO = 1.15  # --sample 16: added p50 <= 1.15 x empty's added p50
LEAN_EVENTS = 16.0  # lean: hook events per fragmented datagram
LEAN_RATIO = 0.6  # lean: added p50 <= 0.6 x full detail's
NONE_SPREAD_PCT = 5.0
START_S = 0.5
RSS_MIB = 80.0


@dataclass
class LoadRun:
    """One sockperf run: a configuration, a cell, a round."""

    round: int
    config: str
    mtu: int
    cpus: int
    kind: str  # "pingpong" (latency) or "throughput" (rate)
    source: str = "sockperf"
    p50_us: float = 0.0  # sockperf's latency: half the round trip
    p99_us: float = 0.0
    avg_us: float = 0.0
    round_trips_per_s: float = 0.0
    sent_per_s: float = 0.0  # throughput: datagrams the client namespace sent per second
    received_per_s: float = 0.0  # throughput: datagrams the server read per second


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base; None when either is missing or base is not positive."""
    return value / base if value is not None and base is not None and base > 0 else None


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _runs(runs: list[LoadRun], config: str, cell: Cell, kind: str) -> list[LoadRun]:
    return [
        r for r in runs if (r.config, r.mtu, r.cpus, r.kind) == (config, cell.mtu, cell.cpus, kind)
    ]


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """(max − min, the same in percent of the median); None with fewer than two rounds."""
    if len(values) < 2:
        return None, None
    width = max(values) - min(values)
    mid = statistics.median(values)
    return width, 100.0 * width / mid if mid > 0 else None


def config_row(runs: list[LoadRun], config: str, cell: Cell) -> dict[str, Any]:
    """One configuration's medians in one cell."""
    pp, tp = _runs(runs, config, cell, "pingpong"), _runs(runs, config, cell, "throughput")
    return {
        "rounds": len(pp) or len(tp),
        "p50_us": median([r.p50_us for r in pp]),
        "p99_us": median([r.p99_us for r in pp]),
        "round_trips_per_s": median([r.round_trips_per_s for r in pp]),
        "throughput_per_s": median([r.received_per_s for r in tp]),
        "sent_per_s": median([r.sent_per_s for r in tp]),
    }


def cell_summary(runs: list[LoadRun], cell: Cell, status: dict[str, str | None]) -> dict[str, Any]:
    """Per configuration (status None: measured; else why not, its figures None): medians,
    what it adds to none, the ratios; none's spread."""
    rows = {
        c: {"status": why or "measured", **config_row(runs, c, cell)} for c, why in status.items()
    }
    base = rows["none"]
    for config, row in rows.items():
        if config == "none":
            continue
        row["added_p50_us"] = _minus(row["p50_us"], base["p50_us"])
        row["added_p99_us"] = _minus(row["p99_us"], base["p99_us"])
        row["p50_ratio"] = ratio(row["p50_us"], base["p50_us"])
        row["p99_ratio"] = ratio(row["p99_us"], base["p99_us"])
        row["throughput_ratio"] = ratio(row["throughput_per_s"], base["throughput_per_s"])
    empty_added = rows.get("empty", {}).get("added_p50_us")
    for config, row in rows.items():
        if config not in ("none", "empty"):
            row["added_p50_vs_empty"] = ratio(row["added_p50_us"], empty_added)
    width, pct = spread([r.p50_us for r in _runs(runs, "none", cell, "pingpong")])
    return {
        "mtu": cell.mtu,
        "cpus": cell.cpus,
        "label": cell.label,
        "none_p50_spread_us": width,
        "none_p50_spread_pct": pct,
        "configs": rows,
    }


def latency_verdict(
    value: float | None, limit: float, base: float | None, noise: float | None
) -> str:
    """value <= limit x base (µs), decided only when none's spread is below the margin."""
    if value is None or base is None:
        return UNAVAILABLE
    margin = value - limit * base
    if noise is None or abs(margin) < noise:
        return "inconclusive"
    return "met" if margin <= 0 else "not met"


def plain_verdict(value: float | None, limit: float) -> str:
    if value is None:
        return UNAVAILABLE
    return "met" if value <= limit else "not met"


def target(value: float | None, limit: float, verdict: str, what: str) -> dict[str, Any]:
    return {"value": value, "limit": limit, "verdict": verdict, "what": what}


def design_floor(
    costs: dict[str, dict[str, Any]], stamps_per_datagram: float | None
) -> dict[str, Any]:
    """Empty's ns per datagram plus stackprof's timestamps per datagram times one
    timestamp's cost on these hooks (clock's ns per event less empty's).

    Empty's ns per datagram is taken as its ns per event times the events stackprof's
    programs ran per datagram: on the same hooks, on a quiet machine, the very same figure,
    but other traffic of the machine, which differs from one run to the next, does not
    then weigh on one side of the ratio only (``events_mismatch`` says by how much)."""
    empty, clock, full = (costs.get(c) for c in ("empty", "clock", "stackprof"))
    if not empty or not clock or not full or stamps_per_datagram is None:
        return {"timestamp_ns": None, "floor_ns_per_datagram": None}
    stamp = clock["mean_ns"] - empty["mean_ns"]
    events = full["events_per_datagram"]
    dispatch = empty["mean_ns"] * events
    return {
        "timestamp_ns": stamp,
        "stamps_per_datagram": stamps_per_datagram,
        "events_per_datagram": events,
        "empty_ns_per_event": empty["mean_ns"],
        "empty_ns_per_datagram": dispatch,
        "events_mismatch": ratio(events, empty["events_per_datagram"]),
        "floor_ns_per_datagram": dispatch + stamps_per_datagram * stamp,
    }


def cost_ratios(costs: dict[str, dict[str, Any]], floor: dict[str, Any]) -> None:
    """Each configuration's BPF ns per datagram over empty's and over the design floor."""
    empty = costs.get("empty", {}).get("ns_per_datagram")
    for cost in costs.values():
        cost["ns_per_datagram_vs_empty"] = ratio(cost["ns_per_datagram"], empty)
        cost["ns_per_datagram_vs_floor"] = ratio(
            cost["ns_per_datagram"], floor.get("floor_ns_per_datagram")
        )


def _added(cell: dict[str, Any], config: str) -> float | None:
    row = cell["configs"].get(config)
    return row.get("added_p50_us") if row else None


def targets(
    cell: dict[str, Any],
    costs: dict[str, dict[str, Any]],
    floor: dict[str, Any],
    attach: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Every target's value, limit and verdict; latency ones on the reference cell."""
    noise = cell["none_p50_spread_us"]
    full = costs.get("stackprof")
    ns_ratio = ratio(full["ns_per_datagram"] if full else None, floor["floor_ns_per_datagram"])
    floor_verdict = plain_verdict(ns_ratio, FLOOR_RATIO)
    if ns_ratio is not None and floor["timestamp_ns"] <= 0:
        floor_verdict = "inconclusive"  # clock no dearer than empty: the unit is noise
    empty, full_added = _added(cell, "empty"), _added(cell, "stackprof")
    sample, lean = _added(cell, "sample16"), _added(cell, "lean")
    fragmented = cell["mtu"] < MSG_SIZE + 28  # 8 KiB in one packet at MTU 9000: no target
    lean_events = costs["lean"]["events_per_datagram"] if "lean" in costs and fragmented else None
    spread_pct = cell["none_p50_spread_pct"]
    return {
        "full ns/datagram vs design floor": target(
            ns_ratio, FLOOR_RATIO, floor_verdict,
            "stackprof's BPF ns per datagram over empty's plus its timestamps' cost",
        ),
        "sample16 added p50 vs empty's": target(
            ratio(sample, empty), SAMPLE_RATIO,
            latency_verdict(sample, SAMPLE_RATIO, empty, noise),
            f"--sample 16's added ping-pong p50 over empty's ({cell['label']})",
        ),
        "lean events per fragmented datagram": target(
            lean_events, LEAN_EVENTS, plain_verdict(lean_events, LEAN_EVENTS),
            "hook events per 8 KiB datagram at MTU 1500 under --detail lean",
        ),
        "lean added p50 vs full's": target(
            ratio(lean, full_added), LEAN_RATIO,
            latency_verdict(lean, LEAN_RATIO, full_added, noise),
            f"--detail lean's added ping-pong p50 over full detail's ({cell['label']})",
        ),
        "none p50 spread": target(
            spread_pct, NONE_SPREAD_PCT,
            "inconclusive" if spread_pct is None else plain_verdict(spread_pct, NONE_SPREAD_PCT),
            f"max - min of none's p50 over rounds, % of its median ({cell['label']})",
        ),
        "attach start s": target(
            attach.get("start_s"), START_S, plain_verdict(attach.get("start_s"), START_S),
            "stackprof attach, exec to every program attached (median over rounds)",
        ),
        "attach peak RSS MiB": target(
            attach.get("peak_rss_mib"), RSS_MIB,
            plain_verdict(attach.get("peak_rss_mib"), RSS_MIB),
            "stackprof attach's VmHWM at the end of its rounds (max over rounds)",
        ),
    }  # fmt: skip


def full_added(cell: dict[str, Any]) -> dict[str, Any]:
    """Full detail's added p50 beside empty's and clock's, with the ratios (no limit)."""
    full, empty, clock = (_added(cell, c) for c in ("stackprof", "empty", "clock"))
    return {
        "cell": cell["label"],
        "stackprof_us": full,
        "empty_us": empty,
        "clock_us": clock,
        "vs_empty": ratio(full, empty),
        "vs_clock": ratio(full, clock),
    }
