"""A path as a person reads it: a datagram path's stage table, a residence path's
table or, when it is compact or has nothing, one line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from profiler.paths import DATAGRAM_PATHS
from profiler.run import Run
from profiler.views.tables import DASH, fmt_us, path_summaries, short_reason, stage_table


def path_view(
    run: Run, path: str, info: Mapping[str, Any], compact: bool = False
) -> RenderableType:
    """A path's stage table; a residence path on one line instead when compact or when
    it has no sample (the line says why)."""
    if path in DATAGRAM_PATHS:
        return stage_table(run, path, info, hide_unobserved=compact)
    if compact or not run.stage(path, "total").get_total_count():
        return residence_line(run, path, info)
    return stage_table(run, path, info)


def residence_line(run: Run, path: str, info: Mapping[str, Any]) -> Text:
    """A residence path on one line: its total p50 and the p50 of each part
    (``server (n=31,636, p50 µs): total 33.5 = rx_stack 12.2 + sock_wait 5.0 …``)."""
    summaries = path_summaries(run, path, info)
    total = summaries.get("total")
    text = Text(f"{path} ", style="bold")
    if not total:
        why = ((info.get("unobserved_paths") or {}).get(path) or {}).get("total")
        text.append(f"unobserved: {short_reason(why) or DASH}", style="dim yellow")
        return text
    text.append(f"(n={int(total['count']):,}, p50 µs): total {fmt_us(float(total['p50_us']))} = ")
    parts = [f"{s} {fmt_us(float(v['p50_us']))}" for s, v in summaries.items() if s != "total"]
    text.append(" + ".join(parts), style="cyan")
    return text
