"""Exports of a run for other tools: CSV/pandas, Parquet, HdrHistogram logs, the JSON
summary and Prometheus' text format.

A CSV leaves an unobserved stage's percentiles empty (NaN in pandas) rather
than 0, so a spreadsheet never averages in a stage that was never measured.
The HDR log keeps full histograms, one tagged interval per path/stage, for
HdrHistogram's own tools (HistogramLogAnalyzer, hdr-plot). Parquet holds one row
per path, stage and kernel bucket with the run's metadata as columns, for
pandas or a warehouse; ``stage_sum_ns``, the exact sum of the path and stage's
values, repeats on each of its rows (null for a run saved before sums were
kept). Every file is written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from profiler import atomic
from profiler.abi import STAGES
from profiler.buckets import bucket_bounds, bucket_of
from profiler.hooks import listed_stages
from profiler.metrics import exposition, recorded
from profiler.run import Run

PERCENTILE_COLUMNS = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"]
RTT_TAG = "client/rtt"
NS_PER_MS = 1_000_000.0


def to_dataframe(run: Run) -> pd.DataFrame:
    """One row per (path, stage) with the ``--json`` summary columns, µs."""
    frame = pd.DataFrame(run.stage_rows())
    frame.loc[frame["count"] == 0, PERCENTILE_COLUMNS] = math.nan
    return frame


def write_csv(run: Run, path: Path) -> Path:
    """The per-stage summary as CSV; unobserved stages have empty percentile cells. The
    last column is the sample rate: the counts are of 1 datagram in ``sample``."""
    frame = to_dataframe(run)
    frame["sample"] = run.sample
    with atomic.atomic_open(path) as out:
        frame.to_csv(out, index=False)
    return Path(path)


class TaggedLogWriter(HistogramLogWriter):
    """hdrh's writer plus the ``Tag=`` prefix its reader already understands."""

    def output_tagged(self, hist: HdrHistogram, tag: str, start_s: float, length_s: float) -> None:
        """One interval line; Interval_Max in ms, the HdrHistogram convention for ns values."""
        payload = hist.encode().decode("ascii")
        self.log.write(
            f"Tag={tag},{start_s:.3f},{length_s:.3f},"
            f"{hist.get_max_value() / NS_PER_MS:.3f},{payload}\n"
        )


def _epoch_s(value: Any) -> float:
    """A start time given as epoch seconds or an ISO 8601 string; 0 when absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _interval(meta: dict[str, Any]) -> tuple[float, float]:
    """Start (epoch s, 0 if unknown) and length (s) of the run, for the log's timestamps."""
    start = _epoch_s(meta["started_at"]) if meta.get("started_at") else 0.0
    return start, float(meta.get("duration_s") or 0.0)


def write_hdr_log(run: Run, path: Path) -> Path:
    """Every stage histogram (ns), empty ones too, as one interval tagged 'path/stage'.

    The client RTT follows, tagged 'client/rtt', so a log alone can be checked
    against what the application saw.
    """
    path = Path(path)
    start, length = _interval(run.meta)
    with atomic.atomic_open(path) as out:
        writer = TaggedLogWriter(out)
        writer.output_log_format_version()
        writer.output_comment(f"stackprof run, values in ns: {json.dumps(run.meta, default=str)}")
        if start:
            stamp = datetime.fromtimestamp(start, UTC).isoformat(" ")
            writer.output_comment(f"[StartTime: {start:.3f} (seconds since epoch), {stamp}]")
        writer.output_legend()
        for p in run.paths():
            for s in listed_stages(run.meta, STAGES):
                writer.output_tagged(run.stage(p, s), f"{p}/{s}", start, length)
        writer.output_tagged(run.client_rtt, RTT_TAG, start, length)
    return path


def write_json(run: Run, path: Path) -> Path:
    """The same document as ``--json``."""
    return atomic.write_text(path, json.dumps(run.summary(), indent=1))


META_COLUMNS = (
    "host",
    "kernel",
    "transport",
    "detail",
    "workload",
    "mtu",
    "started_at",
    "duration_s",
)


def bucket_rows(run: Run) -> pd.DataFrame:
    """One row per path, stage and filled kernel bucket (bounds in ns, count), with
    the stage's exact sum (ns, the same on each of its rows), the run's metadata as
    columns and the sample rate where one was set."""
    rows = []
    meta: dict[str, Any] = {k: run.meta.get(k) for k in META_COLUMNS}
    meta["sample"] = run.sample
    for (path, stage), hist in sorted(run.stages.items()):
        values, counts = recorded(hist)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            low, width = bucket_bounds(bucket_of(int(value)))
            rows.append(
                {
                    "path": path,
                    "stage": stage,
                    "bucket_low_ns": low,
                    "bucket_high_ns": low + width,
                    "count": count,
                    "stage_sum_ns": run.sums.get((path, stage)),
                    **meta,
                }
            )
    columns = ["path", "stage", "bucket_low_ns", "bucket_high_ns", "count", "stage_sum_ns", *meta]
    frame = pd.DataFrame(rows, columns=columns)
    ints = {"bucket_low_ns": "int64", "bucket_high_ns": "int64", "count": "int64"}
    return frame.astype({**ints, "stage_sum_ns": "Int64"})


def write_parquet(run: Run, path: Path) -> Path:
    """The kernel buckets of every stage, as Parquet (pyarrow)."""
    with atomic.atomic_path(path) as tmp:
        bucket_rows(run).to_parquet(tmp, engine="pyarrow", index=False)
    return Path(path)


def write_prom(run: Run, path: Path) -> Path:
    """The text a ``/metrics`` scrape of this run would return."""
    return atomic.write_bytes(path, exposition(run))


WRITERS: dict[str, Callable[[Run, Path], Path]] = {
    ".csv": write_csv,
    ".hlog": write_hdr_log,
    ".json": write_json,
    ".parquet": write_parquet,
    ".prom": write_prom,
}


def export(run: Run, path: Path) -> Path:
    """Write the run in the format its file suffix names; ValueError for any other suffix."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        known = ", ".join(WRITERS)
        raise ValueError(f"{path}: unknown export format {path.suffix!r} (use {known})")
    return writer(run, path)
