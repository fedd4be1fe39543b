"""Transports side by side: the seed paper's question (which transport serves a
lock-manager workload best, and why) as one table of runs made under the same load.

Throughput and the client's round trip say which is best; server CPU and the
per-stage medians and tails say why. A view of saved runs like the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler.hooks import run_stages
from profiler.paths import DATAGRAM_PATHS
from profiler.run import Run, batch_summary, hist_summary
from profiler.views.tables import DASH, fmt_us, stage_label


def _per_s(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else 0.0


def headline(run: Run) -> dict[str, Any]:
    """What the applications measured: requests/s, RTT, server CPU, batching."""
    client: Mapping[str, Any] = run.meta.get("client") or {}
    server: Mapping[str, Any] = run.meta.get("server") or {}
    rtt = hist_summary(run.client_rtt)
    batch = batch_summary(run.batch)
    return {
        "transport": run.meta.get("transport"),
        "requests_per_s": _per_s(client.get("received", 0), client.get("duration_s", 0)),
        "rtt_p50_us": rtt["p50_us"],
        "rtt_p99_us": rtt["p99_us"],
        "server_cpu_pct": round(100 * server["cpu_s"] / server["duration_s"], 1)
        if server.get("duration_s") and "cpu_s" in server
        else None,
        "recvmmsg_batch_mean": batch["mean"] if batch["calls"] else None,
        "bad": client.get("bad", 0),
    }


def stage_percentiles(run: Run) -> dict[str, dict[str, list[float]]]:
    """Per path, per observed stage of this run: [p50, p99] in µs."""
    out: dict[str, dict[str, list[float]]] = {}
    for path in DATAGRAM_PATHS:
        out[path] = {}
        for stage in run_stages(run.meta):
            summary = hist_summary(run.stage(path, stage))
            if summary["count"]:
                out[path][stage] = [float(summary["p50_us"]), float(summary["p99_us"])]
    return out


def comparison_rows(runs: list[Run], skipped: Mapping[str, str]) -> list[dict[str, Any]]:
    """The comparison as data (``--json``): one row per transport asked for."""
    rows = [{**headline(run), "stages": stage_percentiles(run)} for run in runs]
    rows += [{"transport": name, "unavailable": why} for name, why in skipped.items()]
    return rows


def _num(value: float | None, unit: str = "") -> Text:
    if value is None:
        return Text(DASH, style="dim")
    return Text(f"{value:,.0f}{unit}" if value >= 100 else f"{value:g}{unit}")


def headline_table(runs: list[Run], skipped: Mapping[str, str]) -> Table:
    """One row per transport: throughput, round trip, CPU, batching."""
    table = Table(title="transports", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("transport", "req/s", "RTT p50 µs", "RTT p99 µs", "server CPU", "batch"):
        table.add_column(name, justify="left" if name == "transport" else "right")
    for run in runs:
        h = headline(run)
        table.add_row(
            Text(str(h["transport"]), style="bold"),
            _num(h["requests_per_s"]),
            Text(fmt_us(h["rtt_p50_us"])),
            Text(fmt_us(h["rtt_p99_us"])),
            _num(h["server_cpu_pct"], "%"),
            _num(h["recvmmsg_batch_mean"]),
        )
    if skipped:
        table.caption = "; ".join(f"{name} not run: {why}" for name, why in skipped.items())
        table.caption_justify = "left"
    return table


def stages_table(runs: list[Run], path: str) -> Table:
    """Per stage (rows) and transport (columns): 'p50 / p99' in µs."""
    table = Table(title=f"{path} path, p50 / p99 (µs)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stage")
    percentiles = [stage_percentiles(run)[path] for run in runs]
    for run in runs:
        table.add_column(str(run.meta.get("transport")), justify="right")
    stages = dict.fromkeys(s for run in runs for s in run_stages(run.meta))
    for stage in stages:
        if not any(stage in p for p in percentiles):
            continue
        label = stage_label(stage)
        cells = [
            Text(f"{fmt_us(p[stage][0])} / {fmt_us(p[stage][1])}" if stage in p else DASH)
            for p in percentiles
        ]
        table.add_row(label, *cells)
    return table


def render_transports(runs: list[Run], skipped: Mapping[str, str]) -> RenderableType:
    """The whole comparison: headline figures, then where the time went per path."""
    parts: list[RenderableType] = [headline_table(runs, skipped)]
    parts += [stages_table(runs, path) for path in DATAGRAM_PATHS]
    return Group(*parts)
