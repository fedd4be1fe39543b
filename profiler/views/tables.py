"""The tables of a run: where each datagram's time goes, per kernel stage.

Pure functions of a run (and, live, a status dict), so the same tables serve the
live screen, ``stackprof report`` and the tests. Microseconds everywhere; a stage
that saw no datagram shows "—", never a misleading zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler.abi import DROP_CAUSES, MISSES, STAGES
from profiler.hooks import PARENT, STAGE_SPANS, stage_name
from profiler.paths import path_stages, run_paths
from profiler.run import Run, batch_summary, hist_summary

DASH = "—"
BAR_WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉"
PERCENTILES = (
    ("p50", "p50_us"),
    ("p90", "p90_us"),
    ("p99", "p99_us"),
    ("p99.9", "p999_us"),
    ("max", "max_us"),
)


def fmt_us(value: float) -> str:
    """Microseconds with 2 decimals below 100 µs and 1 above: sub-µs stages stay readable."""
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


def share_bar(share: float, width: int = BAR_WIDTH) -> str:
    """A bar of block characters, eighth-block resolution, for a share in [0, 1]."""
    eighths = round(max(0.0, min(share, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def _join(value: Any, sep: str = ",") -> str:
    """Lists (hook candidates) as one compact string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "→".join(_join(v) for v in value.values())
    if isinstance(value, Iterable):
        return sep.join(str(v) for v in value)
    return str(value)


def info_of(run: Run, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run metadata overlaid with the live status: the status is the fresher of the two."""
    return {**run.meta, **(status or {})}


def unobserved_of(run: Run, info: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(path, stage) pairs with no datagram, plus stages the collector could not hook."""
    declared = set(info.get("unobserved") or ())
    return {
        (p, s)
        for p in run_paths(info)
        for s in path_stages(info, p)
        if s in declared or not run.stage(p, s).get_total_count()
    }


def header_line(info: Mapping[str, Any]) -> Text:
    """One line saying what is being measured, so a screenshot explains itself."""
    parts = [("stackprof", "bold")]
    for key, label in (
        ("transport", ""),
        ("mtu", "MTU "),
        ("clients", "clients "),
        ("kernel", "kernel "),
    ):
        if info.get(key) not in (None, "", []):
            parts.append((f"{label}{_join(info[key])}", ""))
    if info.get("request_size") is not None:
        sizes = f"req {info['request_size']} B / resp {info.get('response_size', '?')} B"
        parts.append((sizes, ""))
    if info.get("detail") == "lean":
        parts.append(("lean", "bold"))
    if int(info.get("sample") or 1) > 1:
        parts.append((f"1 in {int(info['sample']):,} datagrams followed", "bold"))
    elapsed, duration = info.get("elapsed_s"), info.get("duration_s")
    if elapsed is not None:
        parts.append((f"{elapsed:.0f}/{duration:.0f} s" if duration else f"{elapsed:.0f} s", ""))
    elif duration:
        parts.append((f"{duration:.0f} s", ""))
    text = Text()
    for index, (part, style) in enumerate(parts):
        if index:
            text.append(" · ", style="dim")
        text.append(part, style=style)
    return text


def path_summaries(run: Run, path: str, info: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Summaries of the observed stages of one path, each computed once per redraw."""
    missing = unobserved_of(run, info)
    return {
        s: hist_summary(run.stage(path, s))
        for s in path_stages(info, path)
        if (path, s) not in missing
    }


def stage_shares(summaries: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each stage's share of the sum of stage p50s: where a typical datagram's time goes.
    Finer stages are shares of the whole too, but do not count twice in it."""
    p50 = {s: float(v["p50_us"]) for s, v in summaries.items() if s != "total"}
    whole = sum(v for s, v in p50.items() if s not in PARENT)
    return {s: (v / whole if whole else 0.0) for s, v in p50.items()}


def stage_table(
    run: Run, path: str, info: Mapping[str, Any], hide_unobserved: bool = False
) -> Table:
    """Per stage: count, percentiles and max in µs, and a bar of its share of the time."""
    table = Table(title=f"{path} path (µs)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stage", no_wrap=True, min_width=STAGE_WIDTH)
    table.add_column("count", justify="right")
    for label, _ in PERCENTILES:
        table.add_column(label, justify="right")
    table.add_column("share of Σ p50", no_wrap=True, min_width=BAR_WIDTH + 5)
    summaries = path_summaries(run, path, info)
    shares = stage_shares(summaries)
    hidden = set(info.get("unobserved") or ()) if hide_unobserved else set()
    why = (info.get("unobserved_paths") or {}).get(path) or {}
    for stage in path_stages(info, path):
        if stage in hidden:
            continue
        row = [stage_label(stage, info.get("transport"))]
        row.extend(_stage_cells(stage, summaries.get(stage), shares, short_reason(why.get(stage))))
        table.add_row(*row)
    reasons = sorted({r for s, r in why.items() if s not in hidden and r != short_reason(r)})
    if reasons:
        table.caption = "\n".join(f"unobserved: {r}" for r in reasons)
        table.caption_justify = "left"
    return table


def short_reason(why: str | None) -> str | None:
    """A reason short enough for a table cell: up to its first colon or semicolon
    (the whole reason goes under the table)."""
    if why is None:
        return None
    return why.split(":")[0].split(";")[0].split(" (")[0]


STAGE_WIDTH = max(len(s) for s in STAGE_SPANS) + 2


def stage_label(stage: str, transport: object = None) -> Text:
    """The stage's name (as the transport reads it); a finer stage indented under
    the one it splits."""
    name = stage_name(stage, transport)
    if stage in PARENT:
        return Text(f"└ {name}", style="dim")
    return Text(name, style="bold" if stage == "total" else "")


def _stage_cells(
    stage: str,
    summary: Mapping[str, float] | None,
    shares: Mapping[str, float],
    why: str | None = None,
) -> list[Text]:
    """Count, percentile and share cells of one row; dashes when the stage saw nothing,
    and why in place of the share."""
    if summary is None:
        cells = [Text(DASH, style="dim") for _ in range(len(PERCENTILES) + 1)]
        return [*cells, Text(f"unobserved: {why}" if why else DASH, style="dim yellow")]
    cells = [Text(str(int(summary["count"])))]
    cells += [Text(fmt_us(float(summary[key]))) for _, key in PERCENTILES]
    if stage == "total":
        cells.append(Text(""))
    else:
        share = shares.get(stage, 0.0)
        cells.append(Text(f"{share_bar(share)} {share * 100:3.0f}%", style="cyan"))
    return cells


# What each cause of loss is called on screen; a saved run's datagram counters name
# them ``incomplete``, ``dropped_<cause>``, ``undelivered`` and ``in_transit``.
LOSS_LABELS = {
    "incomplete": "incomplete",
    "socket_full": "socket buffer full",
    "no_socket": "no socket",
    "socket_filter": "socket filter",
    "netfilter": "netfilter",
    "checksum": "bad checksum",
    "backlog_full": "backlog full",
    "qdisc": "qdisc",
    "other": "other drop",
    "duplicate": "duplicate",
    "undelivered": "never read",
    "in_transit": "never arrived",
}
# Datagram counters whose name says a cause of loss, in the order the views list them.
LOSS_KEYS = (
    "incomplete",
    *(f"dropped_{c}" for c in DROP_CAUSES if c not in ("incomplete", "duplicate")),
    "undelivered",
    "in_transit",
)


def _cause(key: str) -> str:
    return key.removeprefix("fragments_dropped_").removeprefix("dropped_")


def losses(row: Mapping[str, Any]) -> dict[str, int]:
    """One path's datagrams that never reached the application, by cause (label ->
    count), non-zero causes only: incomplete, dropped whole by the kernel's reason,
    whole but never read."""
    out = {LOSS_LABELS[_cause(k)]: int(row.get(k, 0) or 0) for k in LOSS_KEYS}
    return {label: count for label, count in out.items() if count}


def fragment_losses(row: Mapping[str, Any]) -> dict[str, int]:
    """One path's fragments dropped, by cause (label -> count), non-zero only."""
    out = {
        LOSS_LABELS[_cause(k)]: int(v or 0)
        for k, v in row.items()
        if k.startswith("fragments_dropped_") and _cause(k) in LOSS_LABELS
    }
    return {label: count for label, count in out.items() if count}


def lost_line(run: Run) -> Text:
    """Per path, what never reached the application and why, on one line
    (``lost: response: incomplete 1,367 · socket buffer full 335``); incomplete
    datagrams in bold red, 'lost: none' dim when everything arrived."""
    text = Text("lost: ", style="bold")
    rows = run.datagram_rows()
    shown = 0
    for path in rows:
        lost, frags = losses(rows[path]), fragment_losses(rows[path])
        if not lost and not frags:
            continue
        text.append("  " if shown else "")
        text.append(f"{path}: ", style="bold")
        for index, (label, count) in enumerate(lost.items()):
            text.append(" · " if index else "")
            style = "bold red" if label == "incomplete" else "yellow"
            text.append(f"{label} {count:,}", style=style)
        if frags:
            parts = " · ".join(f"{label} {count:,}" for label, count in frags.items())
            text.append(f"{' ' if lost else ''}(fragments dropped: {parts})", style="dim")
        shown += 1
    if not shown:
        text.append("none", style="dim")
    return text


def datagram_table(run: Run, losses_under: bool = True) -> RenderableType:
    """Datagram counters, a column per path: how much of the traffic the stages stand for.
    Counters that stayed zero on both paths are left out, except the headline ones; under
    the table (unless losses_under is False) the line of what was lost, by cause."""
    rows = run.datagram_rows()
    headline = ("sent", "traced", "fragments_per_datagram", "incomplete")
    extras = sorted(
        k
        for k in {k for row in rows.values() for k in row} - set(headline)
        if any(row.get(k) for row in rows.values())
    )
    table = Table(title="datagrams", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("counter")
    for path in rows:
        table.add_column(path, justify="right")
    for name in (*headline, *extras):
        cells = [_counter_cell(name, row.get(name, 0)) for row in rows.values()]
        table.add_row(name, *cells)
    return Group(table, lost_line(run)) if losses_under else table


def _counter_cell(name: str, value: Any) -> Text:
    if name == "fragments_per_datagram":
        return Text(f"{float(value):.2f}" if value else DASH)
    if name in LOSS_KEYS and value:
        return Text(str(value), style="bold red" if name == "incomplete" else "yellow")
    return Text(str(value))


def rtt_line(run: Run) -> Text:
    """The client's own round trip: what the stage numbers should add up to; and the
    batches recvmmsg achieved, when the receiver batches."""
    rtt = hist_summary(run.client_rtt)
    if not rtt["count"]:
        text = Text(f"client RTT: {DASH}", style="dim")
    else:
        text = Text(
            f"client RTT (µs, n={int(rtt['count'])}): p50 {fmt_us(float(rtt['p50_us']))}"
            f" · p99 {fmt_us(float(rtt['p99_us']))}"
        )
    batch = batch_summary(run.batch)
    if batch["calls"]:
        text.append(
            f"\nrecvmmsg batch (messages per call, n={batch['calls']}):"
            f" mean {batch['mean']} · p50 {batch['p50']} · max {batch['max']}"
        )
    return text


def missed_table(run: Run) -> Table:
    """Every missed-event counter, zeros included, so a clean run is visibly clean."""
    table = Table(title="missed events", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("counter")
    table.add_column("count", justify="right")
    names = list(MISSES) + sorted(set(run.missed) - set(MISSES))
    for name in names:
        count = int(run.missed.get(name, 0))
        style = "bold red" if count else "dim"
        table.add_row(Text(name, style=style), Text(str(count), style=style))
    return table


def hook_label(label: Any) -> str:
    """A hook's label, or 'none' for a boundary no hook could serve."""
    return "none" if label is None else _join(label, "+")


def stage_hooks(hooks: Mapping[str, Any]) -> dict[str, str]:
    """Per stage, the hook(s) that timestamp its two ends ('start → end').

    The collector records hooks per boundary (a stage spans two boundaries);
    a mapping already keyed by stage is taken as it is.
    """
    if any(stage in hooks for stage in STAGES):
        return {s: hook_label(hooks[s]) for s in STAGES if s in hooks}
    out = {}
    for stage, (start, end) in STAGE_SPANS.items():
        if start in hooks or end in hooks:
            ends = (start,) if start == end else (start, end)
            out[stage] = " → ".join(hook_label(hooks.get(b)) for b in ends)
    return out


def hooks_line(info: Mapping[str, Any]) -> Text:
    """Each hook once and the unobserved stages: what measured this run, in two lines."""
    text = Text()
    hooks = info.get("hooks") or {}
    if hooks:
        text.append("hooks: ", style="bold")
        for index, (name, label) in enumerate(hooks.items()):
            text.append(" · " if index else "")
            text.append(f"{name}=")
            text.append(hook_label(label), style="yellow" if label is None else "")
    unobserved = list(info.get("unobserved") or ())
    if unobserved:
        text.append("\n" if hooks else "")
        text.append("unobserved: ", style="bold yellow")
        text.append(", ".join(unobserved))
    if info.get("untraced"):
        text.append("\nuntraced: ", style="bold yellow")
        text.append(str(info["untraced"]))
    return text


def missed_line(run: Run) -> Text:
    """Every missed-event counter on one line (the live screen's form of missed_table)."""
    text = Text("missed events: ", style="bold")
    names = list(MISSES) + sorted(set(run.missed) - set(MISSES))
    for index, name in enumerate(names):
        count = int(run.missed.get(name, 0))
        text.append(" · " if index else "")
        text.append(f"{name} {count}", style="bold red" if count else "dim")
    return text
