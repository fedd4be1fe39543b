"""Runs from several hosts or intervals summed into one run.

A fleet runs one stackprof per host, and a long attach saves one run per
interval; ``report`` and ``compare`` read any of them, or their sum. Summing
is only honest when every run measured the same stages with the same
buckets, so runs that differ there are refused, saying which and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler.buckets import MAX_EXP, SUB_BITS
from profiler.run import Run, new_histogram

LAYOUT = {"sub_bits": SUB_BITS, "max_exp": MAX_EXP}


class MergeError(ValueError):
    """Runs that cannot be summed; the message names the runs and what differs."""


def bucket_layout(run: Run) -> dict[str, int]:
    """The kernel bucket layout a run was recorded with (older runs: today's)."""
    return dict(run.meta.get("buckets") or LAYOUT)


def observed_stages(run: Run) -> tuple[str, ...]:
    """The stages a run could see: its stage list less those no hook could observe (a
    stage silent for want of traffic, e.g. one-sided datagrams, can still be merged)."""
    unobserved = set(run.meta.get("unobserved_hooks", run.meta.get("unobserved")) or ())
    return tuple(s for s in run.meta.get("stages") or () if s not in unobserved)


def _check(runs: Sequence[Run], names: Sequence[str]) -> None:
    first, first_name = runs[0], names[0]
    for run, name in zip(runs[1:], names[1:], strict=True):
        if bucket_layout(run) != bucket_layout(first):
            raise MergeError(
                f"{name} has buckets {bucket_layout(run)}, {first_name} has {bucket_layout(first)}"
            )
        if run.sample != first.sample:
            raise MergeError(
                f"{name} followed 1 datagram in {run.sample}, {first_name} 1 in "
                f"{first.sample}: their counts do not add up"
            )
        mine, theirs = set(observed_stages(run)), set(observed_stages(first))
        if mine != theirs:
            only = sorted(mine - theirs)
            missing = sorted(theirs - mine)
            raise MergeError(
                f"{name} and {first_name} observed different stages"
                f" (only in {name}: {', '.join(only) or 'none'};"
                f" only in {first_name}: {', '.join(missing) or 'none'})"
            )


def _sum_histograms(hists: Sequence[HdrHistogram]) -> HdrHistogram:
    total = new_histogram()
    for hist in hists:
        if hist.get_total_count():
            total.add(hist)
    return total


def _sum_sums(runs: Sequence[Run]) -> dict[tuple[str, str], int]:
    """Exact stage sums added, for the stages whose every run kept one (else the
    merged run falls back to midpoints there, as a run saved before sums did)."""
    keys = {k for r in runs for k in r.stages}
    having = [k for k in keys if all(k in r.sums for r in runs if k in r.stages)]
    return {k: sum(r.sums[k] for r in runs if k in r.stages) for k in sorted(having)}


def _sum_counts(dicts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counts in dicts:
        for key, value in counts.items():
            if isinstance(value, int | float):
                out[key] = out.get(key, 0) + int(value)
    return out


def _source(run: Run, name: str) -> dict[str, Any]:
    keys = ("host", "kernel", "transport", "mtu", "started_at", "duration_s", "scope")
    return {"file": name, **{k: run.meta[k] for k in keys if k in run.meta}}


def _merged_meta(runs: Sequence[Run], names: Sequence[str]) -> dict[str, Any]:
    meta = dict(runs[0].meta)
    for key in ("transport", "mtu", "kernel", "workload"):
        values = {str(r.meta.get(key)) for r in runs}
        if len(values) > 1:
            meta[key] = "mixed"
    meta["duration_s"] = max(float(r.meta.get("duration_s") or 0.0) for r in runs)
    meta["buckets"] = bucket_layout(runs[0])
    meta["merged_from"] = [_source(r, n) for r, n in zip(runs, names, strict=True)]
    meta["interrupted"] = any(r.meta.get("interrupted") for r in runs)
    return meta


def merge(runs: Sequence[Run], names: Sequence[str] | None = None) -> Run:
    """The sum of runs: histograms, their exact sums and counters added; MergeError
    if they differ."""
    if not runs:
        raise MergeError("nothing to merge")
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(runs))]
    _check(runs, names)
    keys = sorted({k for r in runs for k in r.stages})
    paths = sorted({p for r in runs for p in (*r.frags, *r.datagrams)})
    return Run(
        meta=_merged_meta(runs, names),
        stages={k: _sum_histograms([r.stages[k] for r in runs if k in r.stages]) for k in keys},
        frags={p: _sum_histograms([r.frags[p] for r in runs if p in r.frags]) for p in paths},
        datagrams={p: _sum_counts([r.datagrams.get(p, {}) for r in runs]) for p in paths},
        missed=_sum_counts([r.missed for r in runs]),
        client_rtt=_sum_histograms([r.client_rtt for r in runs]),
        batch=_sum_histograms([r.batch for r in runs]),
        sums=_sum_sums(runs),
    )


def merge_files(paths: Sequence[Path]) -> Run:
    """Load and merge saved runs; ValueError for a file that is not a run."""
    return merge([Run.load(p) for p in paths], [str(p) for p in paths])
