"""Views of synthetic runs: exact numbers in the tables, deltas, and exports that read back.

Expected strings follow from the fixtures' recorded values and HdrHistogram's
rule that a percentile reports the highest value equivalent to the recorded
one (e.g. 40 000 ns sits in a 32 ns wide bucket, so p50 reads 40.031 µs).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from fixtures_runs import START_EPOCH_S, mtu_1500_run, mtu_9000_run
from hdrh.log import HistogramLogReader
from rich.console import Console, RenderableType

from profiler.abi import MISSES, STAGES
from profiler.export import export, to_dataframe, write_csv, write_hdr_log
from profiler.hooks import PARENT, listed_stages, stages_for
from profiler.paths import run_paths
from profiler.run import Run, hist_summary, mean_value, new_histogram
from profiler.views.compare import render_compare
from profiler.views.live import LiveView, render
from profiler.views.report import render_report
from profiler.views.tables import DASH, fmt_us, missed_table, path_summaries, share_bar

# The rows of a full run: every stage but those only lean runs have.
FULL_ROWS = listed_stages({}, STAGES)

STATUS = {"elapsed_s": 12.3, "duration_s": 30}


def text_of(renderable: RenderableType) -> str:
    """What a 160-column terminal would show, without colours."""
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def row(text: str, title: str, first: str) -> list[str]:
    """The cells of the first line starting with `first` after the line starting with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    for line in lines[start + 1 :]:
        cells = line.split()
        if cells[:1] == ["└"]:
            cells = cells[1:]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} under {title!r}")


def test_fmt_us_keeps_two_decimals_for_small_values() -> None:
    assert fmt_us(0.5) == "0.50"
    assert fmt_us(40.031) == "40.03"
    assert fmt_us(200.063) == "200.1"


def test_share_bar_fills_proportionally() -> None:
    assert share_bar(1.0, 8) == "█" * 8
    assert share_bar(0.5, 8) == "████    "
    assert share_bar(0.0, 4) == "    "


def test_views_summarise_with_the_json_summary() -> None:
    """The tables' figures are the --json summary's (one summary function for both)."""
    run = mtu_1500_run()
    for path in run_paths(run.meta):
        for stage, summary in path_summaries(run, path, run.meta).items():
            assert summary == hist_summary(run.stage(path, stage))
            assert summary["count"] > 0


def test_live_view_shows_percentiles_of_each_stage() -> None:
    text = text_of(render(mtu_1500_run(), STATUS))
    assert row(text, "request path", "total")[:7] == [
        "total", "1000", "40.03", "48.03", "80.06", "200.1", "1000.4",
    ]  # fmt: skip
    assert row(text, "request path", "send")[:7] == [
        "send", "1000", "1.50", "1.80", "3.00", "6.00", "9.01",
    ]  # fmt: skip
    assert row(text, "response path", "total")[:7] == [
        "total", "1000", "30.02", "36.03", "60.03", "100.0", "400.1",
    ]  # fmt: skip


def test_share_is_of_the_sum_of_stage_p50s() -> None:
    text = text_of(render(mtu_1500_run(), STATUS))
    # request p50s: send 1.5, qdisc 0.5, driver 1.0, frag_train 2.0 µs; sum 5.0 µs.
    stages = ("send", "qdisc", "driver", "frag_train")
    shares = {s: row(text, "request path", s)[-1] for s in stages}
    assert shares == {"send": "30%", "qdisc": "10%", "driver": "20%", "frag_train": "40%"}
    assert row(text, "response path", "send")[-1] == "100%"


def test_unobserved_stages_show_dashes_not_zeros() -> None:
    text = text_of(render(mtu_1500_run(), STATUS))
    for stage in ("backlog", "ip_udp", "recv"):
        assert row(text, "request path", stage)[1:8] == [DASH] * 7
    assert row(text, "response path", "frag_train")[1:8] == [DASH] * 7
    assert "unobserved: backlog" in text


def test_header_datagrams_rtt_and_hooks() -> None:
    text = text_of(render(mtu_1500_run(), STATUS))
    header = "udp · MTU 1500 · clients 4 · kernel 6.1.0-test · req 64 B / resp 4000 B · 12/30 s"
    assert header in text
    assert row(text, "datagrams", "sent")[1:] == ["1200", "1100"]
    assert row(text, "datagrams", "traced")[1:] == ["1000", "1000"]
    assert row(text, "datagrams", "fragments_per_datagram")[1:] == ["2.00", DASH]
    assert row(text, "datagrams", "incomplete")[1:] == ["7", "0"]
    assert "client RTT (µs, n=1000): p50 90.05 · p99 150.0" in text
    assert "hooks: send_enter=tracepoint:syscalls/sys_enter_sendto · dev_queue=tp_btf:" in text
    assert "dev_rx=none" in text


def test_missed_counters_always_shown_and_non_zero_highlighted() -> None:
    run = mtu_1500_run()
    text = text_of(render(run, STATUS))
    for name in MISSES:
        assert row(text, "missed events", name)[1] == str(run.missed.get(name, 0))
    table = missed_table(run)
    names = [str(cell) for cell in table.columns[0].cells]
    styles = {str(cell): cell.style for cell in table.columns[1].cells}
    assert names == list(MISSES)
    assert styles["3"] == "bold red"
    assert styles["0"] == "dim"


def test_empty_run_renders_dashes_everywhere() -> None:
    text = text_of(render(Run(), {}))
    for path in run_paths({}):
        for stage in stages_for("udp"):
            assert row(text, f"{path} path", stage)[1:8] == [DASH] * 7
    assert "ring_wait" not in text


def test_finer_stages_sit_under_their_parent_and_do_not_count_twice() -> None:
    """reassembly and udp_rcv split ip_udp: shown under it, shares of ip_udp + recv only."""
    run = Run(meta={"transport": "udp"})
    for stage, value_us in (("ip_udp", 10), ("reassembly", 6), ("udp_rcv", 4), ("recv", 10)):
        hist = new_histogram()
        hist.record_value(value_us * 1000, 100)
        run.stages[("request", stage)] = hist
    text = text_of(render(run, {}))
    lines = text.splitlines()
    at = {name: next(i for i, line in enumerate(lines) if name in line.split()) for name in PARENT}
    assert at["reassembly"] > next(i for i, line in enumerate(lines) if "ip_udp" in line.split())
    assert at["reassembly"] < next(i for i, line in enumerate(lines) if "sock_wait" in line.split())
    assert lines[at["reassembly"]].split()[0] == "└"
    assert row(text, "request path", "ip_udp")[-1] == "50%"
    assert row(text, "request path", "reassembly")[-1] == "30%"
    assert row(text, "request path", "udp_rcv")[-1] == "20%"


def test_live_view_without_terminal_prints_only_the_final_tables() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=160, force_terminal=False))
    with view:
        view.update(mtu_1500_run(), {**STATUS, "elapsed_s": 10})
        view.update(mtu_1500_run(), {**STATUS, "elapsed_s": 20})
    text = out.getvalue()
    assert text.count("request path") == 1
    assert "20/30 s" in text and "10/30 s" not in text


def test_live_view_on_a_terminal_leaves_the_last_state() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=160, force_terminal=True), refresh_s=0.05)
    with view:
        view.update(mtu_1500_run(), {**STATUS, "elapsed_s": 29})
    assert "29/30 s" in out.getvalue()


def test_report_has_metadata_tables_and_hooks() -> None:
    text = text_of(render_report(mtu_1500_run()))
    assert row(text, "run", "kernel") == ["kernel", "6.1.0-test"]
    assert row(text, "run", "mtu") == ["mtu", "1500"]
    total = row(text, "request path", "total")
    assert total[-6:] == ["1000", "40.03", "48.03", "80.06", "200.1", "1000.4"]
    send = row(text, "stages and hooks", "send")
    assert send[-3:] == ["tracepoint:syscalls/sys_enter_sendto", "→", "tp_btf:net_dev_queue"]
    backlog = row(text, "stages and hooks", "backlog")
    assert backlog[-4:] == ["unobserved", "(none", "→", "tp_btf:netif_receive_skb)"]
    assert row(text, "hooks refused", "dev_rx")[1:] == ["tp_btf:netif_rx:", "Invalid", "argument"]
    assert "stage_help" not in text and "started_at" in text
    assert row(text, "missed events", "key_reused")[1] == "3"


def test_compare_shows_signed_deltas_total_first() -> None:
    text = text_of(render_compare(mtu_1500_run(), mtu_9000_run()))
    assert text.splitlines()[0].startswith("A vs B: mtu 1500 vs 9000")
    # p50 40.031 → 50.015 µs; p99 80.063 → 60.031 µs.
    assert row(text, "request path", "total")[1:] == [
        "40.03", "50.02", "+9.98", "+24.9%", "80.06", "60.03", "-20.03", "-25.0%",
    ]  # fmt: skip
    assert row(text, "request path", "send")[1:] == [
        "1.50", "1.20", "-0.30", "-20.0%", "3.00", "2.00", "-1.00", "-33.4%",
    ]  # fmt: skip
    assert row(text, "response path", "total")[3:5] == ["0.00", "0.0%"]
    qdisc = row(text, "request path", "qdisc")
    assert qdisc[1:] == ["0.50", DASH, DASH, DASH, "0.90", DASH, DASH, DASH]
    lines = text[text.index("request path") :].splitlines()
    rule = next(i for i, line in enumerate(lines) if "───" in line)
    assert lines[rule + 1].split()[0] == "total"
    assert row(text, "fragments per datagram", "request") == ["request", "2.00", "1.00"]


def test_compare_flags_stages_measured_by_different_hooks() -> None:
    b = mtu_9000_run()
    b.meta = {**b.meta, "hooks": {**b.meta["hooks"], "dev_rx": "raw_tp:netif_rx"}}
    text = text_of(render_compare(mtu_1500_run(), b))
    assert "hooks differ: dev_rx none vs raw_tp:netif_rx" in text


def test_csv_round_trips_through_pandas(tmp_path: Path) -> None:
    path = write_csv(mtu_1500_run(), tmp_path / "run.csv")
    frame = pd.read_csv(path).set_index(["path", "stage"])
    assert len(frame) == len(run_paths({})) * len(FULL_ROWS)
    total = frame.loc[("request", "total")]
    assert total["count"] == 1000
    assert total["p50_us"] == pytest.approx(40.031)
    assert total["p999_us"] == pytest.approx(200.063)
    assert total["max_us"] == pytest.approx(1000.447)
    assert frame.loc[("response", "send"), "p99_us"] == pytest.approx(2.0)
    assert frame.loc[("request", "backlog"), "count"] == 0
    assert math.isnan(frame.loc[("request", "backlog"), "p50_us"])


def test_dataframe_matches_json_summary_where_observed() -> None:
    run = mtu_1500_run()
    frame = to_dataframe(run)
    observed = [r for r in run.summary()["stages"] if r["count"]]
    got = frame[frame["count"] > 0].to_dict("records")
    assert got == observed


def test_hdr_log_reads_back_with_the_same_counts(tmp_path: Path) -> None:
    run = mtu_1500_run()
    path = write_hdr_log(run, tmp_path / "run.hlog")
    reader = HistogramLogReader(str(path), new_histogram())
    read: dict[str, int] = {}
    p50: dict[str, int] = {}
    while (hist := reader.get_next_interval_histogram()) is not None:
        read[hist.get_tag()] = hist.get_total_count()
        p50[hist.get_tag()] = hist.get_value_at_percentile(50)
        assert hist.get_start_time_stamp() == START_EPOCH_S * 1000
    reader.close()
    expected = {
        f"{p}/{s}": run.stage(p, s).get_total_count()
        for p in run_paths(run.meta)
        for s in FULL_ROWS
    }
    expected["client/rtt"] = 1000
    assert read == expected
    assert p50["request/total"] == 40031
    assert p50["request/qdisc"] == 500


def test_export_chooses_by_suffix(tmp_path: Path) -> None:
    run = mtu_1500_run()
    doc = json.loads(export(run, tmp_path / "run.json").read_text())
    assert doc == json.loads(json.dumps(run.summary()))
    paths = run_paths(run.meta)
    assert pd.read_csv(export(run, tmp_path / "RUN.CSV")).shape[0] == len(paths) * len(FULL_ROWS)
    assert export(run, tmp_path / "run.hlog").read_text().count("Tag=") == 2 * len(FULL_ROWS) + 1


def test_export_rejects_an_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.xlsx"):
        export(mtu_1500_run(), tmp_path / "run.xlsx")
    assert not (tmp_path / "run.xlsx").exists()


def test_mean_value_is_hdrh_mean_from_the_non_zero_counts() -> None:
    hist = new_histogram()
    for value, count in ((40, 3), (1_234, 7), (987_654, 2), (5_000_000_000, 1)):
        hist.record_value(value, count)
    assert mean_value(hist) == pytest.approx(hist.get_mean_value(), rel=1e-12)
    assert mean_value(new_histogram()) == 0.0
