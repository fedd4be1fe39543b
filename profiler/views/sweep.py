"""A sweep on the terminal: the wall as a character plot with the same data as the PNG, the
table behind it, each series' knee, Table 1 (frames per block or batch sizes) and the
diagnosis sentences; and the progress bar while a sweep runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from profiler.sweep import SeriesPoint, knee, series, series_label
from profiler.views.tables import DASH

PLOT_W, PLOT_H = 64, 16
MARKS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def progress(console: Console) -> Progress:
    """run n of N, the run's point, and the time left."""
    return Progress(
        TextColumn("[bold]sweep[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return DASH if value is None else format(value, fmt)


def wall_plot(rows: Sequence[Mapping[str, Any]]) -> Text:
    """Blocks/s (x, linear) against RTT p50 (y, log): one letter per series, as in the PNG."""
    grouped = {k: v for k, v in series(rows).items() if v}
    points = [p for pts in grouped.values() for p in pts]
    if not points:
        return Text("(no runs to plot)", style="dim")
    x_max = max(p.blocks_per_s for p in points) or 1.0
    ys = [math.log10(max(p.rtt_p50_us, 1.0)) for p in points]
    y_lo, y_hi = min(ys), max(ys)
    span = (y_hi - y_lo) or 1.0
    grid = [[" "] * PLOT_W for _ in range(PLOT_H)]
    for i, pts in enumerate(grouped.values()):
        for p in pts:
            col = min(PLOT_W - 1, round(p.blocks_per_s / x_max * (PLOT_W - 1)))
            y = math.log10(max(p.rtt_p50_us, 1.0))
            line = PLOT_H - 1 - min(PLOT_H - 1, round((y - y_lo) / span * (PLOT_H - 1)))
            grid[line][col] = MARKS[i % len(MARKS)]
    text = Text()
    for n, cells in enumerate(grid):
        y_value = 10 ** (y_hi - n / (PLOT_H - 1) * span)
        axis = f"{y_value:>9,.0f} │" if n % 5 == 0 or n == PLOT_H - 1 else f"{'':>9} │"
        text.append(axis + "".join(cells) + "\n")
    text.append(f"{'':>9} └" + "─" * PLOT_W + "\n")
    text.append(f"{'':>11}0{'blocks/s':^{PLOT_W - 12}}{x_max:>10,.0f}\n")
    for i, key in enumerate(grouped):
        text.append(f"  {MARKS[i % len(MARKS)]} = {series_label(key)}\n", style="bold")
    return text


def _knee_text(points: list[SeriesPoint]) -> str:
    foot = knee(points)
    if foot is None:
        return "no knee: throughput still grew at the last client count"
    return (
        f"knee at {foot.clients} client{'s' * (foot.clients != 1)} "
        f"({foot.blocks_per_s:,.0f} blocks/s, "
        f"p50 {foot.rtt_p50_us:,.0f} µs): beyond it latency grows at flat throughput"
    )


def series_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The data behind the plot: per series and clients, medians over the repeats."""
    table = Table(title="the wall, per series", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("series", "clients", "blocks/s", "req/s", "RTT p50 µs", "RTT p99 µs"):
        table.add_column(name, justify="left" if name == "series" else "right")
    table.add_column("server CPU", justify="right")
    table.add_column("spread", justify="right")
    for key, points in series(rows).items():
        foot = knee(points)
        for p in points:
            label = Text(series_label(key), style="bold") if p is points[0] else Text("")
            mark = " ◀ knee" if foot is p else ""
            table.add_row(
                label,
                f"{p.clients}{mark}",
                _num(p.blocks_per_s),
                _num(p.requests_per_s),
                _num(p.rtt_p50_us, ",.1f"),
                _num(p.rtt_p99_us, ",.1f"),
                _num(p.server_cpu, ".1f") + ("%" if p.server_cpu is not None else ""),
                f"{p.spread:.0%}" if p.repeats > 1 else DASH,
            )
    return table


def fpb_table(table_rows: Sequence[Mapping[str, Any]]) -> Table | None:
    """Table 1 of the seed paper: requests/s and server CPU idle per frames per block."""
    if not table_rows:
        return None
    table = Table(
        title="frames per block (Table 1) / batch", box=box.SIMPLE_HEAD, title_justify="left"
    )
    for name in ("transport", "MTU", "clients", "knob", "requests/s", "server CPU idle"):
        table.add_column(name, justify="left" if name in ("transport", "knob") else "right")
    for r in table_rows:
        idle = r.get("server_cpu_idle")
        table.add_row(
            str(r["transport"]),
            str(r["mtu"]),
            str(r["clients"]),
            f"{r['knob']} {r['value']}",
            _num(r["requests_per_s"]),
            DASH if idle is None else f"{idle:.1f}%",
        )
    return table


def auto_lines(cells: Sequence[Mapping[str, Any]]) -> list[Text]:
    """auto against the best fixed setting, per transport, MTU and clients."""
    out = []
    for c in cells:
        ratio = c.get("auto_over_best")
        style = "green" if ratio is not None and ratio >= 0.9 else "yellow"
        out.append(
            Text(
                f"{c['transport']} MTU {c['mtu']} · {c['clients']} clients: {c['knob']} auto "
                f"{c['auto_requests_per_s']:,.0f} req/s, best fixed ({c['knob']} "
                f"{c['best_fixed']}) {c['best_fixed_requests_per_s']:,.0f}: "
                + (f"{ratio:.0%} of it" if ratio is not None else "—"),
                style=style,
            )
        )
    return out


def render_sweep(doc: Mapping[str, Any]) -> RenderableType:
    """A sweep index in full: the plot, the knees, the table, Table 1, the diagnoses."""
    rows = [r for r in doc.get("rows", []) if "error" not in r]
    failed = [r for r in doc.get("rows", []) if "error" in r]
    config = doc.get("config") or {}
    head = Text("sweep", style="bold")
    head.append(
        f" · workload {config.get('workload', 'echo')} · {len(rows)} runs"
        f" · {config.get('duration', '?')} s each"
    )
    parts: list[RenderableType] = [head, wall_plot(rows), series_table(rows)]
    for key, points in series(rows).items():
        parts.append(Text(f"{series_label(key)}: {_knee_text(points)}"))
    table1 = fpb_table(doc.get("fpb_table") or [])
    if table1 is not None:
        parts.append(table1)
    parts += auto_lines(doc.get("auto") or [])
    sentences = [s for d in doc.get("diagnosis") or [] for s in d.get("sentences", [])]
    if sentences:
        parts.append(Text("diagnosis", style="bold"))
        parts += [Text(f"  {s}") for s in sentences]
    for r in failed:
        parts.append(Text(f"not run: {r.get('file') or r['transport']}: {r['error']}", "yellow"))
    return Group(*parts)
