"""The overhead benchmark's printed tables (benchmarks/README.md says how to read them)."""

from __future__ import annotations

from typing import Any

from benchmarks.overhead_figures import LoadRun
from benchmarks.overhead_stats import EventCost


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def col(value: float | None, spec: str, width: int) -> str:
    """A table cell: the value, or "-", right-aligned in width."""
    return fmt(value, spec).rjust(width)


def kilo(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e3:.1f}K"


def print_attached(
    rnd: int, rounds: int, config: str, start: float | None, rss: float | None
) -> None:
    attach = f"attached in {start:.2f} s, RSS {rss:.1f} MiB" if start is not None else ""
    print(f"round {rnd + 1}/{rounds} {config:<10} {attach}", flush=True)


def print_run(label: str, pingpong: LoadRun | None, throughput: LoadRun) -> None:
    latency = (
        f"p50 {pingpong.p50_us:6.1f} us  p99 {pingpong.p99_us:7.1f} us  "
        f"{kilo(pingpong.round_trips_per_s):>7} rt/s"
        if pingpong
        else "ping-pong skipped (--blast-only)"
    )
    print(
        f"  {label:<20} {latency}   throughput {kilo(throughput.received_per_s):>7} dgram/s "
        f"(sent {kilo(throughput.sent_per_s)}/s)",
        flush=True,
    )


def print_cost_line(cost: EventCost) -> None:
    print(
        f"  BPF stats: {cost.events_per_datagram:.1f} events, {cost.ns_per_datagram:.0f} ns "
        f"per datagram ({cost.datagrams} datagrams)",
        flush=True,
    )


def print_cell(cell: dict[str, Any]) -> None:
    """One cell: per configuration the medians, what it adds to none, the ratios."""
    print(
        f"\n{cell['label']}: ping-pong p50/p99 (sockperf, half a round trip) and throughput; "
        f"none's p50 spread {fmt(cell['none_p50_spread_pct'], '.1f', '%')} "
        f"({fmt(cell['none_p50_spread_us'], '.2f', ' us')})"
    )
    print(
        f"  {'config':<10}{'p50 us':>8}{'p99 us':>9}{'+p50':>8}{'+p99':>8}{'p50 x':>7}"
        f"{'p99 x':>7}{'+p50/empty':>11}{'rt/s':>9}{'dgram/s':>9}{'thr x':>7}"
    )
    for config, row in cell["configs"].items():
        if not row["rounds"]:
            print(f"  {config:<10}  {row['status']}")
            continue
        print(
            f"  {config:<10}{col(row['p50_us'], '.1f', 8)}{col(row['p99_us'], '.1f', 9)}"
            f"{col(row.get('added_p50_us'), '+.1f', 8)}{col(row.get('added_p99_us'), '+.1f', 8)}"
            f"{col(row.get('p50_ratio'), '.2f', 7)}{col(row.get('p99_ratio'), '.2f', 7)}"
            f"{col(row.get('added_p50_vs_empty'), '.2f', 11)}"
            f"{kilo(row['round_trips_per_s']):>9}{kilo(row['throughput_per_s']):>9}"
            f"{col(row.get('throughput_ratio'), '.2f', 7)}"
        )


def print_costs(costs: dict[str, dict[str, Any]], label: str) -> None:
    """Per configuration, then per program: events and BPF time per datagram."""
    print(f"\nBPF cost (kernel BPF stats over a ping-pong, {label}; medians over rounds)")
    print(f"  {'config':<10}{'events/dgram':>13}{'ns/event':>10}{'ns/dgram':>10}{'x empty':>9}")
    empty = costs.get("empty", {}).get("ns_per_datagram")
    for config, cost in costs.items():
        x = cost["ns_per_datagram"] / empty if empty else None
        print(
            f"  {config:<10}{cost['events_per_datagram']:13.1f}{cost['mean_ns']:10.1f}"
            f"{cost['ns_per_datagram']:10.0f}{col(x, '.2f', 9)}"
        )
    names = sorted({p["name"] for c in costs.values() for p in c["programs"]})
    configs = list(costs)
    print(f"\n  mean ns per event, program by program (all rounds): {', '.join(configs)}")
    print(f"  {'program':<30}{'events/dgram':>13}" + "".join(f"{c:>11}" for c in configs))
    for name in names:
        per = {c: _program(costs[c], name) for c in configs}
        where = next((c for c in configs if per[c]), configs[0])  # empty's when it has it
        found, datagrams = per[where], costs[where]["datagrams"]
        events = found["events"] / datagrams if found and datagrams else 0.0
        cells = "".join(
            col(p["mean_ns"] if p and p["events"] else None, ".1f", 11) for p in per.values()
        )
        print(f"  {name:<30}{events:13.2f}{cells}")


def _program(cost: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in cost["programs"] if p["name"] == name), None)


def print_floor(floor: dict[str, Any], costs: dict[str, dict[str, Any]]) -> None:
    if floor.get("floor_ns_per_datagram") is None:
        print("\ndesign floor: not measured")
        return
    full = costs["stackprof"]["ns_per_datagram"]
    print(
        f"\none timestamp (bpf_ktime_get_ns) here: {floor['timestamp_ns']:.1f} ns per event "
        f"(clock - empty); stackprof takes {floor['stamps_per_datagram']:.2f} per datagram "
        "(counted: stampcount.bpf.o)"
    )
    print(
        f"design floor: {floor['empty_ns_per_event']:.1f} ns x {floor['events_per_datagram']:.1f}"
        f" events + {floor['stamps_per_datagram']:.2f} x {floor['timestamp_ns']:.1f} ns = "
        f"{floor['floor_ns_per_datagram']:.0f} ns per datagram; stackprof {full:.0f} ns "
        f"(x {full / floor['floor_ns_per_datagram']:.2f})"
    )
    mismatch = floor["events_mismatch"]
    if mismatch is not None and abs(mismatch - 1) > 0.15:
        print(
            f"WARNING: stackprof ran {mismatch:.2f}x empty's events per datagram on the same "
            "hooks: other traffic on this machine is in the counts"
        )


def print_attach(attach: dict[str, dict[str, Any]]) -> None:
    for config, a in attach.items():
        starts = a["start_s_rounds"]
        span = f"{min(starts):.2f}..{max(starts):.2f}" if starts else "-"
        print(
            f"{config} attach: start {fmt(a['start_s'], '.2f', ' s')} (median; {span}), "
            f"RSS {fmt(a['rss_attached_mib'], '.1f')} MiB attached, "
            f"peak {fmt(a['peak_rss_mib'], '.1f')} MiB; traced {a['traced']}"
        )


def print_added(added: dict[str, Any]) -> None:
    print(
        f"\nfull detail's added p50 ({added['cell']}): "
        f"stackprof {fmt(added['stackprof_us'], '+.2f')} us, "
        f"empty {fmt(added['empty_us'], '+.2f')} us (x {fmt(added['vs_empty'], '.2f')}), "
        f"clock {fmt(added['clock_us'], '+.2f')} us (x {fmt(added['vs_clock'], '.2f')})"
    )


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    print("\nTargets")
    print(f"  {'target':<38}{'value':>9}{'limit':>8}  verdict")
    for name, t in targets.items():
        print(f"  {name:<38}{col(t['value'], '.2f', 9)}{t['limit']:8.2f}  {t['verdict']}")
