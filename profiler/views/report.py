"""A saved run in full (``stackprof report FILE``).

The report reuses the live view's tables so a saved run reads exactly like the
screen did, and adds its metadata, the hooks that measured each stage and the
hooks refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler.hooks import STAGE_HELP, run_stages, stage_name
from profiler.paths import run_paths
from profiler.run import Run
from profiler.views.paths import path_view
from profiler.views.tables import (
    DASH,
    datagram_table,
    header_line,
    info_of,
    missed_table,
    rtt_line,
    stage_hooks,
)

LISTED_APART = (
    "hooks",
    "unobserved",
    "unobserved_hooks",
    "unobserved_paths",
    "unobserved_reasons",
    "hooks_refused",
    "stage_help",
)


def value_text(value: Any) -> str:
    """A metadata value on one line."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def meta_table(meta: Mapping[str, Any]) -> Table:
    """Every metadata key, so a report says how its numbers were taken."""
    table = Table(title="run", box=box.SIMPLE_HEAD, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in meta.items():
        if key not in LISTED_APART:
            table.add_row(key, value_text(value))
    return table


def hooks_table(info: Mapping[str, Any]) -> Table:
    """Per stage: what it spans, the hooks that measured it, or that nothing could."""
    hooks = stage_hooks(info.get("hooks") or {})
    unobserved = set(info.get("unobserved") or ())
    table = Table(title="stages and hooks", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("stage", "span", "hooks"):
        table.add_column(name)
    for stage in run_stages(info):
        hook = hooks.get(stage, DASH)
        if stage in unobserved:
            cell = Text(f"unobserved ({hook})", style="yellow")
        else:
            cell = Text(hook, style="dim" if hook == DASH else "")
        name = stage_name(stage, info.get("transport"))
        table.add_row(name, STAGE_HELP.get(name, ""), cell)
    return table


def refused_table(info: Mapping[str, Any]) -> Table | None:
    """Hooks tried and refused, with the kernel's reason: why a stage fell back or went dark."""
    refused = info.get("hooks_refused") or {}
    if not refused:
        return None
    table = Table(title="hooks refused", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("boundary")
    table.add_column("candidate: reason", style="dim")
    for boundary, reasons in refused.items():
        for reason in reasons:
            table.add_row(boundary, str(reason))
    return table


def render_report(run: Run) -> RenderableType:
    """A saved run in full: metadata, stage tables, datagrams, misses and hooks."""
    info = info_of(run)
    parts: list[RenderableType] = [header_line(info), meta_table(run.meta)]
    parts += [path_view(run, path, info) for path in run_paths(info)]
    parts += [datagram_table(run), rtt_line(run), missed_table(run), hooks_table(info)]
    refused = refused_table(info)
    if refused is not None:
        parts.append(refused)
    return Group(*parts)
