"""Two saved runs side by side (``stackprof compare A B``).

Compare lines two runs up stage by stage so the effect of one change (an MTU,
a kernel, a sysctl) shows as a signed delta per stage.
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
from profiler.run import Run
from profiler.views.report import LISTED_APART, value_text
from profiler.views.tables import (
    DASH,
    STAGE_WIDTH,
    fmt_us,
    fragment_losses,
    hook_label,
    info_of,
    losses,
    path_summaries,
    stage_label,
)

NOT_COMPARED = (*LISTED_APART, "started_at", "client", "server")


def meta_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """'key A vs B' for each metadata key whose value differs: what the comparison is about."""
    out = []
    for key in dict.fromkeys([*a, *b]):
        if key in NOT_COMPARED or a.get(key) == b.get(key):
            continue
        out.append(f"{key} {value_text(a.get(key, DASH))} vs {value_text(b.get(key, DASH))}")
    return out


def delta_cells(a_us: float | None, b_us: float | None) -> tuple[Text, Text]:
    """Signed µs and % change from A to B; red when B is slower, green when faster."""
    if a_us is None or b_us is None:
        return Text(DASH, style="dim"), Text(DASH, style="dim")
    delta = round(b_us - a_us, 3)
    if not delta:
        return Text("0.00"), Text("0.0%")
    style = "red" if delta > 0 else "green"
    pct = Text(f"{delta / a_us * 100:+.1f}%", style=style) if a_us else Text(DASH, style="dim")
    return Text(f"{delta:+.2f}", style=style), pct


def _percentile(summary: Mapping[str, float] | None, key: str) -> float | None:
    """A stage percentile in µs, or None when the stage was not observed."""
    return None if summary is None else float(summary[key])


def _us_cell(value: float | None) -> Text:
    return Text(DASH, style="dim") if value is None else Text(fmt_us(value))


def compare_table(a: Run, b: Run, path: str, labels: tuple[str, str]) -> Table:
    """Stage by stage p50 and p99 of both runs and their deltas, total first."""
    title = f"{path} path (µs): A = {labels[0]}, B = {labels[1]}"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stage", no_wrap=True, min_width=STAGE_WIDTH)
    for pct in ("p50", "p99"):
        for name in (f"A {pct}", f"B {pct}", f"Δ {pct}", "Δ%"):
            table.add_column(name, justify="right")
    summaries_a = path_summaries(a, path, info_of(a))
    summaries_b = path_summaries(b, path, info_of(b))
    unseen = set(a.meta.get("unobserved") or ()) & set(b.meta.get("unobserved") or ())
    stages = dict.fromkeys((*run_stages(a.meta), *run_stages(b.meta)))
    for stage in (s for s in stages if s not in unseen):
        row: list[Text] = [stage_label(stage, a.meta.get("transport"))]
        for key in ("p50_us", "p99_us"):
            va = _percentile(summaries_a.get(stage), key)
            vb = _percentile(summaries_b.get(stage), key)
            row += [_us_cell(va), _us_cell(vb), *delta_cells(va, vb)]
        table.add_row(*row)
    return table


def fragments_table(a: Run, b: Run, labels: tuple[str, str]) -> Table:
    """Fragments per datagram of each run: usually the reason the stages moved."""
    table = Table(title="fragments per datagram", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("path")
    table.add_column(labels[0], justify="right")
    table.add_column(labels[1], justify="right")
    rows_a, rows_b = a.datagram_rows(), b.datagram_rows()
    for path in DATAGRAM_PATHS:
        fa = float(rows_a[path]["fragments_per_datagram"])
        fb = float(rows_b[path]["fragments_per_datagram"])
        table.add_row(path, f"{fa:.2f}" if fa else DASH, f"{fb:.2f}" if fb else DASH)
    return table


def losses_table(a: Run, b: Run, labels: tuple[str, str]) -> RenderableType:
    """Datagrams that never reached the application in each run, per path and cause
    (fragments dropped apart); one dim line when neither run lost any."""
    rows_a, rows_b = a.datagram_rows(), b.datagram_rows()
    table = Table(title="datagrams lost", box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("path", "left"), ("cause", "left"), (labels[0], "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column(labels[1], justify="right")
    table.add_column("Δ", justify="right")
    for path in DATAGRAM_PATHS:
        for kind, count in (("", losses), ("fragments dropped: ", fragment_losses)):
            la, lb = count(rows_a[path]), count(rows_b[path])
            for cause in dict.fromkeys([*la, *lb]):
                va, vb = la.get(cause, 0), lb.get(cause, 0)
                style = "bold red" if cause == "incomplete" and not kind else ""
                delta = Text(f"{vb - va:+,}" if vb != va else "0", style="red" if vb > va else "")
                table.add_row(path, Text(kind + cause, style=style), f"{va:,}", f"{vb:,}", delta)
    if not table.row_count:
        return Text("datagrams lost: none in either run", style="dim")
    return table


def _hook_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> Text:
    """Hooks that differ between A and B: their stages' deltas are not like for like."""
    ha, hb = a.get("hooks") or {}, b.get("hooks") or {}
    diffs = [
        f"{name} {hook_label(ha.get(name))} vs {hook_label(hb.get(name))}"
        for name in dict.fromkeys([*ha, *hb])
        if ha.get(name) != hb.get(name)
    ]
    if not diffs:
        return Text("")
    return Text("hooks differ: " + " · ".join(diffs), style="yellow")


def render_compare(
    a: Run,
    b: Run,
    labels: tuple[str, str] = ("A", "B"),
    diagnosis: Mapping[str, Any] | None = None,
) -> RenderableType:
    """Two runs side by side, per path, deltas as B − A; the title names what differs;
    the diagnosis sentences (:mod:`profiler.diagnose`) last."""
    diffs = meta_differences(a.meta, b.meta)
    title = Text(f"{labels[0]} vs {labels[1]}: ", style="bold")
    title.append(" · ".join(diffs) if diffs else "same metadata")
    parts: list[RenderableType] = [title, _hook_differences(a.meta, b.meta)]
    parts += [compare_table(a, b, path, labels) for path in DATAGRAM_PATHS]
    parts += [fragments_table(a, b, labels), losses_table(a, b, labels)]
    if diagnosis:
        parts.append(Text("diagnosis", style="bold"))
        parts += [Text(f"  {sentence}") for sentence in diagnosis["sentences"]]
    return Group(*parts)
