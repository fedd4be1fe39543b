"""A run: what one trace measured, the one data model every view reads.

The collector fills it from the kernel's buckets; it saves itself under
``traces/`` as self-describing JSON (HDR histograms in their standard
compressed encoding) and loads back for ``report``, ``compare`` and exports.
Beside each stage's histogram it keeps the exact sum of the values the kernel
recorded (``sum_ns``); a run saved before sums were kept has none, and its
sums and means come from the buckets' midpoints (within 0.8%).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler import atomic
from profiler.abi import STAGES
from profiler.buckets import bucket_value, nonzero
from profiler.hooks import listed_stages
from profiler.paths import RESIDENCE_STAGES, run_paths

FORMAT = "stackprof-run"
VERSION = 1
HIGHEST_NS = 1 << 40
SIG_FIGS = 3


def new_histogram() -> HdrHistogram:
    """An HDR histogram of nanoseconds, finer than the kernel buckets."""
    return HdrHistogram(1, HIGHEST_NS, SIG_FIGS)


def histogram_from_buckets(counts: list[int] | tuple[int, ...]) -> HdrHistogram:
    """Fill an HDR histogram with each bucket's count at the bucket's midpoint."""
    hist = new_histogram()
    for index, count in nonzero(counts):
        hist.record_value(bucket_value(index), count)
    return hist


def _us(value_ns: float) -> float:
    return round(value_ns / 1000.0, 3)


def midpoint_sum(hist: HdrHistogram) -> int:
    """The sum of a histogram's values, each taken at its bucket's midpoint."""
    import numpy as np  # here, not above: attach reads no histogram before it is attached

    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    return sum(
        int(counts[i]) * hist._hdr_median_equiv_value(hist.get_value_from_index(int(i)))
        for i in np.flatnonzero(counts)
    )


def mean_value(hist: HdrHistogram) -> float:
    """hdrh's get_mean_value, from the non-zero counts only: its iterator walks every
    sub-bucket, which made summaries cost seconds (a minute under emulation)."""
    if not hist.get_total_count():
        return 0.0
    return float(midpoint_sum(hist)) / hist.get_total_count()


def hist_summary(hist: HdrHistogram) -> dict[str, float | int]:
    """Count, percentiles, max and mean of a nanosecond histogram, in microseconds."""
    count = hist.get_total_count()
    if not count:
        return {
            "count": 0,
            "p50_us": 0.0,
            "p90_us": 0.0,
            "p99_us": 0.0,
            "p999_us": 0.0,
            "max_us": 0.0,
            "mean_us": 0.0,
        }
    # One walk over the buckets for all four (hdrh's own faster query).
    at = hist.get_percentile_to_value_dict([50, 90, 99, 99.9])
    return {
        "count": count,
        "p50_us": _us(at[50]),
        "p90_us": _us(at[90]),
        "p99_us": _us(at[99]),
        "p999_us": _us(at[99.9]),
        "max_us": _us(hist.get_max_value()),
        "mean_us": _us(mean_value(hist)),
    }


def batch_summary(hist: HdrHistogram) -> dict[str, float | int]:
    """Messages per recvmmsg call, as the kernel returned them."""
    calls = hist.get_total_count()
    return {
        "calls": calls,
        "mean": round(mean_value(hist), 2) if calls else 0.0,
        "p50": hist.get_value_at_percentile(50) if calls else 0,
        "max": hist.get_max_value() if calls else 0,
    }


def _encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def _decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


@dataclass
class Run:
    """Metadata, per-(path, stage) latency histograms (and their exact sums, ns,
    where the kernel kept them) and the run's counters."""

    meta: dict[str, Any] = field(default_factory=dict)
    stages: dict[tuple[str, str], HdrHistogram] = field(default_factory=dict)
    frags: dict[str, HdrHistogram] = field(default_factory=dict)
    datagrams: dict[str, dict[str, int]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    client_rtt: HdrHistogram = field(default_factory=new_histogram)
    batch: HdrHistogram = field(default_factory=new_histogram)
    sums: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def sample(self) -> int:
        """1 datagram in this many was followed (--sample; runs saved before it: 1): the
        histograms and the followed counts are of those, the sent counts of all."""
        return int(self.meta.get("sample") or 1)

    def stage(self, path: str, stage: str) -> HdrHistogram:
        """The histogram of one stage (empty if the stage was not seen)."""
        return self.stages.get((path, stage)) or new_histogram()

    def stage_sum(self, path: str, stage: str) -> int:
        """The sum (ns) of one stage's values: exact, or from the buckets' midpoints
        for a run saved before the kernel kept sums."""
        exact = self.sums.get((path, stage))
        return exact if exact is not None else midpoint_sum(self.stage(path, stage))

    def paths(self) -> tuple[str, ...]:
        """The run's paths (paths.run_paths), and any residence path it recorded."""
        listed = run_paths(self.meta)
        extra = sorted({p for p, _ in self.stages} - set(listed))
        return (*listed, *(p for p in RESIDENCE_STAGES if p in extra))

    def stage_rows(self) -> list[dict[str, Any]]:
        """One summary row per (path, stage) in stage order, total first: every stage the
        kernel has, but a lean run's only its own (hooks.listed_stages)."""
        rows = []
        for path in self.paths():
            for stage in listed_stages(self.meta, STAGES):
                hist, exact = self.stage(path, stage), self.sums.get((path, stage))
                row = {"path": path, "stage": stage, **hist_summary(hist)}
                if exact is not None and hist.get_total_count():
                    row["mean_us"] = _us(exact / hist.get_total_count())
                rows.append(row)
        return rows

    def datagram_rows(self) -> dict[str, dict[str, Any]]:
        """Per path: sent, traced, mean fragments per datagram, incomplete."""
        out: dict[str, dict[str, Any]] = {}
        for path in self.paths():
            counts = self.datagrams.get(path, {})
            frags = self.frags.get(path)
            mean_frags = mean_value(frags) if frags else 0.0
            out[path] = {
                "sent": int(counts.get("sent", 0)),
                "traced": int(counts.get("traced", 0)),
                "fragments_per_datagram": round(mean_frags, 3),
                "incomplete": int(counts.get("incomplete", 0)),
                **{
                    k: int(v)
                    for k, v in counts.items()
                    if k not in ("sent", "traced", "incomplete")
                },
            }
        return out

    def summary(self) -> dict[str, Any]:
        """The document written by ``--json``."""
        rtt = hist_summary(self.client_rtt)
        return {
            "meta": self.meta,
            "stages": self.stage_rows(),
            "datagrams": self.datagram_rows(),
            "client_rtt": {k: rtt[k] for k in ("count", "p50_us", "p99_us", "max_us")},
            "missed": dict(self.missed),
            "recvmmsg_batch": batch_summary(self.batch),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, histograms included, for saving."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "summary": self.summary(),
            "histograms": [
                {
                    "path": p,
                    "stage": s,
                    "unit": "ns",
                    "hdr": _encode(h),
                    **({"sum_ns": self.sums[(p, s)]} if (p, s) in self.sums else {}),
                }
                for (p, s), h in sorted(self.stages.items())
            ],
            "fragments": {p: _encode(h) for p, h in self.frags.items()},
            "datagram_counts": self.datagrams,
            "client_rtt_hdr": _encode(self.client_rtt),
            "batch_hdr": _encode(self.batch),
        }

    def save(self, path: Path) -> Path:
        """Write the run whole (atomically): a reader never sees half a run."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic.write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Run:
        """Read a saved run; ValueError if the file is not one."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable stackprof run ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path}: not a stackprof run file")
        summary, hists = doc["summary"], doc["histograms"]
        return cls(
            meta=summary["meta"],
            stages={(h["path"], h["stage"]): _decode(h["hdr"]) for h in hists},
            frags={p: _decode(t) for p, t in doc.get("fragments", {}).items()},
            datagrams=doc.get("datagram_counts", {}),
            missed=summary.get("missed", {}),
            client_rtt=_decode(doc["client_rtt_hdr"]),
            batch=_decode(doc["batch_hdr"]) if "batch_hdr" in doc else new_histogram(),
            sums={(h["path"], h["stage"]): int(h["sum_ns"]) for h in hists if "sum_ns" in h},
        )


def default_trace_path(meta: dict[str, Any], directory: Path = Path("traces")) -> Path:
    """traces/<time>-<transport>-mtu<mtu>.json"""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return directory / f"{stamp}-{meta.get('transport', 'run')}-mtu{meta.get('mtu', 0)}.json"
