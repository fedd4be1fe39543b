"""`stackprof sweep`: the matrix, rows, series and knees as data (no root); then (root) a
small real sweep writes its runs, index, PNG and SVG, and `report DIR` re-renders it."""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import command
import numpy as np
import pytest
from matplotlib import image

from profiler import sweep
from profiler.sweep import Point, SeriesPoint
from profiler.views.console import plain_console
from profiler.views.plots import DPI, HEIGHT_IN, WIDTH_IN, draw_wall, slug
from profiler.views.sweep import render_sweep, wall_plot

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces")
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def fake_row(transport: str, mtu: int, clients: int, rate: float, p50: float, **kw: Any) -> dict:
    return {
        "transport": transport, "mtu": mtu, "clients": clients, "fpb": None, "batch": None,
        "repeat": 0, "requests_per_s": rate, "blocks_per_s": rate, "rtt_p50_us": p50,
        "rtt_p99_us": 3 * p50, "server_cpu": 50.0, "server_cpu_us": 20.0,
        "file": f"{transport}-{mtu}-{clients}.json", **kw,
    }  # fmt: skip


def wall_rows() -> list[dict[str, Any]]:
    """Two series: one hits its wall at 8 clients, the other keeps growing."""
    shape = {1: (1000, 100), 2: (2000, 100), 4: (4000, 110), 8: (8000, 120),
             16: (8200, 240), 32: (8100, 480)}  # fmt: skip
    rows = [fake_row("udp", 1500, c, r, p) for c, (r, p) in shape.items()]
    rows += [fake_row("udp", 9000, c, 1500.0 * c, 90.0) for c in shape]
    return rows


def test_matrix_is_series_by_series_clients_ascending() -> None:
    points = sweep.matrix(["udp", "packet-v3"], [1500, 9000], [4, 1], fpbs=[16, "auto"])
    assert len(points) == 2 * 2 + 2 * 2 * 2
    assert points[:2] == [Point("udp", 1500, 1), Point("udp", 1500, 4)]
    assert Point("packet-v3", 9000, 4, fpb="auto") in points
    assert Point("packet-v3", 1500, 1, fpb=16).name() == "packet-v3-mtu1500-c1-fpb16.json"
    assert len(sweep.matrix(["udp"], [1500], [1, 2], repeat=3)) == 6


def test_knee_is_where_latency_grows_at_flat_throughput() -> None:
    series = sweep.series(wall_rows())
    foot = sweep.knee(series[("udp", 1500, None, None)])
    assert foot is not None and foot.clients == 8
    assert sweep.knee(series[("udp", 9000, None, None)]) is None


def test_repeats_are_medians_with_their_spread() -> None:
    rows = [fake_row("udp", 1500, 4, r, 100) for r in (900.0, 1000.0, 1300.0)]
    (point,) = sweep.aggregate(rows)
    assert isinstance(point, SeriesPoint)
    assert point.requests_per_s == 1000.0 and point.repeats == 3
    assert point.spread == pytest.approx(0.4)


def test_fpb_table_reads_like_table_1() -> None:
    rows = [
        fake_row("packet-v3", 1500, 64, rate, 100, fpb=fpb, server_cpu=cpu)
        for fpb, rate, cpu in ((16, 20000.0, 99.0), (32, 18000.0, 70.0), (64, 6000.0, 20.0))
    ]
    table = sweep.fpb_table(rows)
    assert [(r["value"], r["requests_per_s"], r["server_cpu_idle"]) for r in table] == [
        (16, 20000.0, 1.0),
        (32, 18000.0, 30.0),
        (64, 6000.0, 80.0),
    ]


def test_wall_is_drawn_as_png_and_svg_one_series_each(tmp_path: Path) -> None:
    drawn = draw_wall(wall_rows(), "test")
    (tmp_path / "wall.png").write_bytes(drawn["png"])
    pixels = image.imread(tmp_path / "wall.png")
    assert pixels.shape[:2] == (int(HEIGHT_IN * DPI), int(WIDTH_IN * DPI))
    svg = drawn["svg"].decode()
    for label in ("udp MTU 1500", "udp MTU 9000"):
        assert svg.count(f'id="{slug(label)}-p50"') == 1
        assert svg.count(f'id="{slug(label)}-p99"') == 1


def test_terminal_rendition_has_the_same_data() -> None:
    console = plain_console()
    doc = sweep.index_doc({"workload": "echo", "duration": 1}, wall_rows(), [])
    with console.capture() as cap:
        console.print(render_sweep(doc))
    text = cap.get()
    assert "A = udp MTU 1500" in text and "B = udp MTU 9000" in text
    assert "knee at 8 clients" in text and "no knee" in text
    assert "8,200" in text  # the table behind the plot
    assert wall_plot([]).plain == "(no runs to plot)"


def series_colours_seen(pixels: np.ndarray, count: int) -> int:
    """How many of the first count series colours (matplotlib's cycle) the image shows."""
    rgb = (pixels[..., :3] * 255).astype(int)
    seen = 0
    for hex_colour in TAB10[:count]:
        want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        if (np.abs(rgb - want).sum(axis=-1) < 30).sum() > 50:
            seen += 1
    return seen


stackprof = functools.partial(command.stackprof, timeout=600)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 transports x 2 MTUs x 3 client counts, 1 s runs."""
    folder = tmp_path_factory.mktemp("sweep") / "out"
    proc = stackprof(
        "sweep", "--transport", "udp,tcp", "--mtu", "1500,9000", "--clients", "1,2,4",
        "--duration", "1", "--out", str(folder),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return folder


@root
@pytest.mark.root
def test_sweep_writes_runs_index_and_plots(small_sweep: Path) -> None:
    doc = json.loads((small_sweep / "sweep.json").read_text())
    assert doc["format"] == "stackprof-sweep"
    rows = doc["rows"]
    assert len(rows) == 12 and not [r for r in rows if "error" in r]
    for r in rows:
        assert (small_sweep / r["file"]).is_file()
        assert r["blocks_per_s"] > 0 and r["rtt_p50_us"] > 0 and r["server_cpu"] > 0
        assert r["rtt_p99_us"] >= r["rtt_p50_us"] and r["bad"] == 0
    assert {(r["transport"], r["mtu"]) for r in rows} == {
        (t, m) for t in ("udp", "tcp") for m in (1500, 9000)
    }
    assert len(doc["knees"]) == 4
    pixels = image.imread(small_sweep / "wall.png")
    assert pixels.shape[:2] == (int(HEIGHT_IN * DPI), int(WIDTH_IN * DPI))
    assert series_colours_seen(pixels, 4) == 4, "one coloured series per transport x MTU"
    svg = (small_sweep / "wall.svg").read_text()
    assert len(re.findall(r'<g id="series-[a-z0-9-]+-p50"', svg)) == 4
    diagnoses = {d["a"]: d for d in doc["diagnosis"]}
    assert set(diagnoses) == {"udp MTU 1500", "tcp MTU 1500"}
    assert diagnoses["udp MTU 1500"]["fragments"] == [6.0, 1.0]


@root
@pytest.mark.root
def test_report_dir_re_renders_the_sweep(small_sweep: Path, tmp_path: Path) -> None:
    (small_sweep / "wall.png").unlink()
    proc = stackprof("report", str(small_sweep), "--json", str(tmp_path / "rows.json"))
    assert proc.returncode == 0, proc.stderr
    assert "udp MTU 1500" in proc.stdout and "the wall, per series" in proc.stdout
    assert (small_sweep / "wall.png").is_file()
    doc = json.loads((tmp_path / "rows.json").read_text())
    assert len(doc["rows"]) == 12 and doc["diagnosis"]
    proc = stackprof("report", str(tmp_path))
    assert proc.returncode == 2 and "without a sweep index" in proc.stderr


def test_auto_is_measured_against_the_best_fixed_setting() -> None:
    rows = [
        fake_row("packet-v3", 1500, 64, rate, 100, fpb=fpb)
        for fpb, rate in ((8, 9000.0), (16, 10000.0), (32, 4000.0), ("auto", 9500.0))
    ]
    (cell,) = sweep.auto_vs_fixed(rows)
    assert cell["best_fixed"] == 16 and cell["auto_over_best"] == 0.95
    doc = sweep.index_doc({}, rows, [])
    assert doc["auto"] == [cell]
    console = plain_console()
    with console.capture() as cap:
        console.print(render_sweep(doc))
    assert "fpb auto 9,500 req/s, best fixed (fpb 16) 10,000: 95% of it" in cap.get()
