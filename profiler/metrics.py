"""A run in Prometheus' text format: what ``/metrics`` serves and ``export OUT.prom`` writes.

Prometheus is the fleet's collector: each host's stackprof only exposes its
own cumulative figures, and PromQL aggregates and rates them across hosts.

Latency buckets: 4 per power of two, from 256 ns to 2**32 ns (4.3 s). Each
bound is a kernel bucket boundary (the kernel splits every power of two from
64 ns up into 64), so the cumulative counts are exact, not re-binned. What
``histogram_quantile`` returns is interpolated linearly inside one of these
buckets: the true quantile lies in the same bucket, so its error is at most
the bucket's width, a quarter of its lower bound (25% of the value) and far
less in practice; a quantile below 256 ns is only known to lie in [0, 256 ns].
``_count`` is exact, and so is ``_sum``: the kernel adds every value it
records to its histogram's sum (a run saved before it kept sums, read by
``export OUT.prom``, adds each bucket's midpoint instead: within 0.8%).

Labels are low-cardinality only: path, stage, kind, reason (and transport
in the lab). No address or port is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from profiler.run import Run, midpoint_sum

NS_PER_S = 1e9
PER_OCTAVE = 4
LOWEST_EXP = 8  # 256 ns
HIGHEST_EXP = 32  # 4.29 s
LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(
    ((PER_OCTAVE + j) << exp) // PER_OCTAVE
    for exp in range(LOWEST_EXP, HIGHEST_EXP)
    for j in range(PER_OCTAVE)
) + (1 << HIGHEST_EXP,)
FRAGMENT_BOUNDS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 45)


def recorded(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """(lowest value, count) of each filled HDR sub-bucket, ascending, without
    hdrh's per-sub-bucket walk (seconds per histogram)."""
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = np.flatnonzero(counts)
    values = np.array([hist.get_value_from_index(int(i)) for i in index], dtype=np.int64)
    order = np.argsort(values, kind="stable")
    return values[order], counts[index][order].astype(np.int64)


def cumulative(hist: HdrHistogram, bounds: tuple[int, ...]) -> list[int]:
    """How many values are at most each bound (a value is recorded at its kernel
    bucket's midpoint, inside the bucket, so a bound on a boundary splits exactly)."""
    values, counts = recorded(hist)
    running = np.concatenate(([0], np.cumsum(counts)))
    return [int(running[np.searchsorted(values, b, side="right")]) for b in bounds]


def _histogram_buckets(
    hist: HdrHistogram, bounds: tuple[int, ...], scale: float
) -> list[tuple[str, float]]:
    below = cumulative(hist, bounds)
    out = [(floatToGoString(b / scale), float(n)) for b, n in zip(bounds, below, strict=True)]
    out.append(("+Inf", float(hist.get_total_count())))
    return out


class RunCollector(Collector):
    """Metric families of the latest run a snapshot function returns; reads no kernel
    state itself, so a scrape costs the collector nothing and never waits on it."""

    def __init__(self, snapshot: Callable[[], Run | None], labels: Mapping[str, str] = {}):
        self.snapshot = snapshot
        self.labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        run = self.snapshot()
        if run is None:
            return
        yield from run_metrics(run, self.labels)


def _latency(run: Run, extra: Mapping[str, str]) -> Metric:
    family = HistogramMetricFamily(
        "stackprof_stage_latency_seconds",
        "Time a datagram spent in one kernel stage (total: the whole path).",
        labels=["path", "stage", *extra],
    )
    for (path, stage), hist in sorted(run.stages.items()):
        family.add_metric(
            [path, stage, *extra.values()],
            _histogram_buckets(hist, LATENCY_BOUNDS_NS, NS_PER_S),
            run.stage_sum(path, stage) / NS_PER_S,
        )
    return family


def _fragments(run: Run, extra: Mapping[str, str]) -> Metric:
    family = HistogramMetricFamily(
        "stackprof_fragments_per_datagram",
        "IP fragments each traced datagram travelled in.",
        labels=["path", *extra],
    )
    for path, hist in sorted(run.frags.items()):
        buckets = _histogram_buckets(hist, FRAGMENT_BOUNDS, 1.0)
        family.add_metric([path, *extra.values()], buckets, midpoint_sum(hist))
    return family


def _datagrams(run: Run, extra: Mapping[str, str]) -> Metric:
    family = CounterMetricFamily(
        "stackprof_datagrams",
        "Datagrams per path by kind (sent, traced, delivered, incomplete, kernel counters).",
        labels=["path", "kind", *extra],
    )
    for path, counts in sorted(run.datagrams.items()):
        for kind, value in sorted(counts.items()):
            family.add_metric([path, kind, *extra.values()], float(value))
    return family


def _missed(run: Run, extra: Mapping[str, str]) -> Metric:
    family = CounterMetricFamily(
        "stackprof_missed",
        "Events stackprof could not record, by reason.",
        labels=["reason", *extra],
    )
    for reason, value in sorted(run.missed.items()):
        family.add_metric([reason, *extra.values()], float(value))
    return family


def info_labels(meta: Mapping[str, Any]) -> dict[str, str]:
    """The kernel, the hook used per boundary, the unobserved stages, the sample rate (1
    datagram in ``sample`` followed) and the detail (full or lean), as info labels."""
    hooks = meta.get("hooks") or {}
    out = {
        "kernel": str(meta.get("kernel", "")),
        "unobserved": ",".join(meta.get("unobserved") or ()),
        "sample": str(int(meta.get("sample") or 1)),
        "detail": str(meta.get("detail") or "full"),
    }
    out.update({f"hook_{name}": str(choice or "none") for name, choice in sorted(hooks.items())})
    return out


def run_metrics(run: Run, extra: Mapping[str, str] = {}) -> Iterator[Metric]:
    """Every family of one run, cumulative since its start."""
    info = InfoMetricFamily("stackprof", "The kernel and the hooks stackprof chose.")
    info.add_metric([], info_labels(run.meta))
    yield info
    yield _latency(run, extra)
    yield _fragments(run, extra)
    yield _datagrams(run, extra)
    yield _missed(run, extra)


def exposition(run: Run, labels: Mapping[str, str] = {}) -> bytes:
    """The text a scrape of this run returns."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(lambda: run, labels))
    return generate_latest(registry)


class Endpoint:
    """``/metrics`` for a session: the session hands it each refreshed run, a
    scrape reads the last one handed over (a reference swap, no lock to wait on)."""

    def __init__(self, host: str, port: int, labels: Mapping[str, str] = {}):
        self.latest: Run | None = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RunCollector(lambda: self.latest, labels))
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)

    def update(self, run: Run) -> None:
        """Keep a snapshot of run: the collector replaces histograms, never edits them,
        so copies of its dicts stay consistent while it goes on."""
        self.latest = Run(
            meta=dict(run.meta),
            stages=dict(run.stages),
            frags=dict(run.frags),
            datagrams={p: dict(c) for p, c in run.datagrams.items()},
            missed=dict(run.missed),
            client_rtt=run.client_rtt,
            batch=run.batch,
            sums=dict(run.sums),
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
