"""Synthetic runs with known histogram contents, so view tests can assert exact numbers.

Values are nanoseconds. Each stage gets a five-level distribution of 1000
samples (500/400/90/9/1) so p50, p90, p99, p99.9 and max each land on a
different recorded value.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler.run import Run, new_histogram

SPLIT = (500, 400, 90, 9, 1)
START_EPOCH_S = 1714557600.0

# As the collector records them: per boundary, None where no hook worked.
HOOKS: dict[str, str | None] = {
    "send_enter": "tracepoint:syscalls/sys_enter_sendto",
    "dev_queue": "tp_btf:net_dev_queue",
    "dev_xmit": "tp_btf:net_dev_start_xmit",
    "dev_rx": None,
    "stack_rx": "tp_btf:netif_receive_skb",
    "sk_enqueue": "tp_btf:sk_data_ready",
    "recv_enter": "tracepoint:syscalls/sys_enter_recvfrom",
    "recv_return": "tp_btf:sock_recv_length",
}


def hist_of(values: dict[int, int]) -> HdrHistogram:
    """A nanosecond histogram holding count samples of each value."""
    hist = new_histogram()
    for value, count in values.items():
        hist.record_value(value, count)
    return hist


def levels(p50: int, p90: int, p99: int, p999: int, top: int) -> HdrHistogram:
    """1000 samples whose p50/p90/p99/p99.9/max are exactly the given values."""
    counts: Counter[int] = Counter()
    for value, count in zip((p50, p90, p99, p999, top), SPLIT, strict=True):
        counts[value] += count
    return hist_of(dict(counts))


def make_run(stages: dict[tuple[str, str], HdrHistogram], **fields: Any) -> Run:
    """A Run from stage histograms plus any other Run field (meta, missed, ...)."""
    return Run(stages=dict(stages), **fields)


def mtu_1500_run() -> Run:
    """Small datagrams at MTU 1500: response never fragments, one miss recorded."""
    stages = {
        ("request", "total"): levels(40_000, 48_000, 80_000, 200_000, 1_000_000),
        ("request", "send"): levels(1_500, 1_800, 3_000, 6_000, 9_000),
        ("request", "qdisc"): levels(500, 600, 900, 1_200, 1_500),
        ("request", "driver"): levels(1_000, 1_100, 1_300, 1_600, 2_000),
        ("request", "frag_train"): levels(2_000, 2_046, 2_046, 2_046, 2_046),
        ("response", "total"): levels(30_000, 36_000, 60_000, 100_000, 400_000),
        ("response", "send"): levels(1_200, 1_400, 2_000, 2_000, 2_000),
    }
    return make_run(
        stages,
        meta={
            "kernel": "6.1.0-test",
            "hooks": HOOKS,
            "unobserved": ["backlog"],
            "hooks_refused": {"dev_rx": ["tp_btf:netif_rx: Invalid argument"]},
            "started_at": "2024-05-01T10:00:00+0000",
            "transport": "udp",
            "mtu": 1500,
            "clients": 4,
            "request_size": 64,
            "response_size": 4000,
            "duration_s": 30,
            "client": {"sent": 1200, "timeouts": 0},
        },
        frags={"request": hist_of({3: 10, 1: 10})},
        datagrams={
            "request": {"sent": 1200, "traced": 1000, "incomplete": 7},
            "response": {"sent": 1100, "traced": 1000, "incomplete": 0},
        },
        missed={"flight_full": 0, "key_reused": 3},
        client_rtt=levels(90_000, 95_000, 150_000, 300_000, 2_000_000),
    )


def mtu_9000_run() -> Run:
    """The same load at MTU 9000: request total slower, send faster, no fragments."""
    stages = {
        ("request", "total"): levels(50_000, 52_000, 60_000, 100_000, 500_000),
        ("request", "send"): levels(1_200, 1_500, 2_000, 2_000, 2_000),
        ("response", "total"): levels(30_000, 36_000, 60_000, 100_000, 400_000),
    }
    meta = {**mtu_1500_run().meta, "mtu": 9000, "started_at": "2024-05-01T11:00:00+0000"}
    meta["client"] = {"sent": 1300, "timeouts": 2}
    return make_run(stages, meta=meta, frags={"request": hist_of({1: 20})})
