"""Merge, Parquet and Prometheus text of the recorded runs in traces/fixtures (and of
exact stage sums given to them): no root, no BPF, the figures checked against the runs
themselves."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from profiler import abi, merge
from profiler.buckets import bucket_bounds, bucket_of
from profiler.collector import interval_run
from profiler.export import export
from profiler.metrics import LATENCY_BOUNDS_NS, cumulative
from profiler.run import Run, midpoint_sum
from tests.fixtures_runs import hist_of

FIXTURES = Path(__file__).resolve().parent.parent / "traces" / "fixtures"
JUMBO = FIXTURES / "udp-mtu9000-cpu0.json"
FRAGMENTED = FIXTURES / "udp-mtu1500-cpu0.json"


def test_merge_sums_every_histogram_and_counter() -> None:
    a, b = Run.load(JUMBO), Run.load(FRAGMENTED)
    both = merge.merge_files([JUMBO, FRAGMENTED])
    for key in set(a.stages) | set(b.stages):
        expected = a.stage(*key).get_total_count() + b.stage(*key).get_total_count()
        assert both.stage(*key).get_total_count() == expected
    for path in ("request", "response"):
        for kind, value in a.datagrams[path].items():
            assert both.datagrams[path][kind] == value + b.datagrams[path][kind]
    assert both.client_rtt.get_total_count() == (
        a.client_rtt.get_total_count() + b.client_rtt.get_total_count()
    )
    assert both.meta["mtu"] == "mixed"
    assert [s["file"] for s in both.meta["merged_from"]] == [str(JUMBO), str(FRAGMENTED)]


def test_merged_run_saves_and_loads_for_report(tmp_path: Path) -> None:
    merged = merge.merge_files([JUMBO, JUMBO])
    again = Run.load(merged.save(tmp_path / "merged.json"))
    p50 = again.stage("response", "total").get_value_at_percentile(50)
    assert p50 == Run.load(JUMBO).stage("response", "total").get_value_at_percentile(50)


def test_merge_refuses_runs_that_saw_other_stages() -> None:
    a = Run.load(JUMBO)
    b = copy.deepcopy(a)
    b.meta["unobserved"] = [*b.meta["unobserved"], "backlog"]
    with pytest.raises(merge.MergeError, match="backlog"):
        merge.merge([a, b], ["host-a", "host-b"])


def test_merge_refuses_another_bucket_layout() -> None:
    a = Run.load(JUMBO)
    b = copy.deepcopy(a)
    b.meta["buckets"] = {"sub_bits": 5, "max_exp": 36}
    with pytest.raises(merge.MergeError, match="host-b has buckets"):
        merge.merge([a, b], ["host-a", "host-b"])


def test_latency_bounds_are_kernel_bucket_boundaries() -> None:
    for bound in LATENCY_BOUNDS_NS:
        low, _ = bucket_bounds(bucket_of(bound))
        assert low == bound


def test_cumulative_counts_are_exact_at_bucket_boundaries() -> None:
    # Values recorded at kernel bucket midpoints, as the collector does.
    hist = hist_of({300: 5, 1000: 7, 1_100_000: 3})
    below = dict(zip(LATENCY_BOUNDS_NS, cumulative(hist, LATENCY_BOUNDS_NS), strict=True))
    assert below[256] == 0 and below[320] == 5 and below[896] == 5
    assert below[1024] == 12 and below[1 << 20] == 12 and below[1 << 32] == 15


def test_parquet_has_one_row_per_path_stage_and_bucket(tmp_path: Path) -> None:
    run = Run.load(FRAGMENTED)
    frame = pd.read_parquet(export(run, tmp_path / "run.parquet"))
    for (path, stage), hist in run.stages.items():
        rows = frame[(frame.path == path) & (frame.stage == stage)]
        assert int(rows["count"].sum()) == hist.get_total_count()
        assert rows.bucket_low_ns.is_unique
        assert (rows.bucket_high_ns > rows.bucket_low_ns).all()
    assert set(frame.transport) == {"udp"} and set(frame.mtu) == {1500}
    assert set(frame.kernel) == {run.meta["kernel"]}


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prom_export_is_what_a_scrape_returns(tmp_path: Path) -> None:
    run = Run.load(FRAGMENTED)
    text = export(run, tmp_path / "run.prom").read_text()
    families = _families(text)
    latency = families["stackprof_stage_latency_seconds"]
    counts = {
        (s.labels["path"], s.labels["stage"]): s.value
        for s in latency.samples  # type: ignore[attr-defined]
        if s.name.endswith("_count")
    }
    assert counts == {k: h.get_total_count() for k, h in run.stages.items()}
    datagrams = families["stackprof_datagrams"]
    sent = {
        s.labels["path"]: s.value
        for s in datagrams.samples  # type: ignore[attr-defined]
        if s.labels["kind"] == "sent"
    }
    assert sent == {p: run.datagrams[p]["sent"] for p in ("request", "response")}
    info = families["stackprof_info"].samples[0].labels  # type: ignore[attr-defined]
    assert info["hook_stack_rx"] == run.meta["hooks"]["stack_rx"]
    assert "ip_rx" in info["unobserved"].split(",")
    names = {n for f in families.values() for s in f.samples for n in s.labels}  # type: ignore[attr-defined]
    assert names <= {"path", "stage", "kind", "reason", "le", *info}


def test_prom_buckets_are_cumulative_and_end_at_the_count(tmp_path: Path) -> None:
    text = export(Run.load(JUMBO), tmp_path / "run.prom").read_text()
    latency = _families(text)["stackprof_stage_latency_seconds"]
    series: dict[tuple[str, str], list[float]] = {}
    for sample in latency.samples:  # type: ignore[attr-defined]
        if sample.name.endswith("_bucket"):
            key = (sample.labels["path"], sample.labels["stage"])
            series.setdefault(key, []).append(sample.value)
    for values in series.values():
        assert values == sorted(values) and values[-1] > 0


def _stackprof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiler", *args], capture_output=True, text=True, timeout=60
    )


def test_merge_command_saves_a_run_report_reads(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    proc = _stackprof("merge", str(JUMBO), str(FRAGMENTED), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert Run.load(out).meta["merged_from"]
    report = _stackprof("report", str(out))
    assert report.returncode == 0 and "sock_wait" in report.stdout


def test_merge_command_refuses_with_one_line(tmp_path: Path) -> None:
    other = Run.load(JUMBO)
    other.meta["buckets"] = {"sub_bits": 5, "max_exp": 36}
    odd = other.save(tmp_path / "odd.json")
    for args in (
        (str(JUMBO), str(odd), "-o", str(tmp_path / "m.json")),
        (str(JUMBO), "-o", str(tmp_path / "no-such-folder" / "m.json")),
        (str(tmp_path / "missing.json"), "-o", str(tmp_path / "m.json")),
    ):
        proc = _stackprof("merge", *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("stackprof: error:")
    assert not (tmp_path / "m.json").exists()


def _with_sums(run: Run, per_value: int) -> Run:
    """run with an exact sum per stage, different from its midpoints' sum."""
    run.sums = {k: h.get_total_count() * per_value + 7 for k, h in run.stages.items()}
    return run


def test_merge_adds_exact_sums_and_falls_back_where_a_run_has_none() -> None:
    a, b = _with_sums(Run.load(JUMBO), 1000), _with_sums(Run.load(FRAGMENTED), 3000)
    both = merge.merge([a, b])
    assert set(both.sums) == set(a.stages) | set(b.stages)
    for key, total in both.sums.items():
        assert total == a.sums.get(key, 0) + b.sums.get(key, 0)
        assert both.stage_sum(*key) == total
    older = Run.load(FRAGMENTED)  # saved before sums: none
    mixed = merge.merge([a, older])
    assert set(mixed.sums) == set(a.stages) - set(older.stages)
    shared = ("response", "total")
    assert shared not in mixed.sums
    assert mixed.stage_sum(*shared) == midpoint_sum(mixed.stage(*shared))


def test_interval_run_takes_the_sums_difference() -> None:
    before, now = abi.Stats(), abi.Stats()
    row = abi.hist_index("response", "total")
    before.hist[row][bucket_of(5000)], before.sum[row] = 2, 10_020
    now.hist[row][bucket_of(5000)], now.hist[row][bucket_of(9000)] = 3, 1
    now.sum[row] = 10_020 + 5010 + 9003
    part = interval_run(before, now, {})
    assert part.stage("response", "total").get_total_count() == 2
    assert part.sums == {("response", "total"): 5010 + 9003}


def test_exact_sums_are_saved_served_and_exported(tmp_path: Path) -> None:
    run = Run.load(Run.load(FRAGMENTED).save(tmp_path / "old.json"))
    assert run.sums == {}  # a run saved before sums: midpoints, quietly
    text = export(run, tmp_path / "old.prom").read_text()
    for key, value in _prom_sums(text).items():
        assert value == run.stage_sum(*key) / 1e9 == midpoint_sum(run.stage(*key)) / 1e9
    assert pd.read_parquet(export(run, tmp_path / "old.parquet")).stage_sum_ns.isna().all()

    exact = Run.load(_with_sums(run, 4321).save(tmp_path / "new.json"))
    assert exact.sums == run.sums
    assert _prom_sums(export(exact, tmp_path / "new.prom").read_text()) == {
        k: v / 1e9 for k, v in exact.sums.items()
    }
    frame = pd.read_parquet(export(exact, tmp_path / "new.parquet"))
    for (path, stage), total in exact.sums.items():
        rows = frame[(frame.path == path) & (frame.stage == stage)]
        assert set(rows.stage_sum_ns) == {total}
    for row in exact.stage_rows():
        if row["count"]:
            total = exact.sums[(row["path"], row["stage"])]
            assert row["mean_us"] == round(total / row["count"] / 1000, 3)


def _prom_sums(text: str) -> dict[tuple[str, str], float]:
    latency = _families(text)["stackprof_stage_latency_seconds"]
    return {
        (s.labels["path"], s.labels["stage"]): s.value
        for s in latency.samples  # type: ignore[attr-defined]
        if s.name.endswith("_sum")
    }
