"""The wall drawn (Fig. 3 of the seed paper): client RTT against 8 KiB blocks per second,
one line per series (transport x MTU, and frames per block or batch where swept), p50
solid and p99 dashed in the same colour, each point labelled by its clients, the knee
ringed. Written as PNG and SVG with matplotlib's object API (no pyplot state, no display).

In the SVG every series is two groups, ``<g id="SLUG-p50">`` and ``<g id="SLUG-p99">``,
so a reader (or a test) finds each series by name.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from profiler.sweep import SeriesPoint, knee, series, series_label

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 6.0, 80  # 720 x 480 pixels: small enough to commit


def slug(label: str) -> str:
    """A series label as an SVG id: lower case, runs of other characters as one dash."""
    return "series-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _draw(fig: Figure, rows: Sequence[Mapping[str, Any]], title: str) -> None:
    ax = fig.add_subplot()
    drawn = 0
    for i, (key, points) in enumerate(series(rows).items()):
        if not points:
            continue
        label = series_label(key)
        colour = f"C{i % 10}"
        x = [p.blocks_per_s / 1000 for p in points]
        p50 = [max(p.rtt_p50_us, 1.0) for p in points]
        p99 = [max(p.rtt_p99_us, 1.0) for p in points]
        (line,) = ax.plot(x, p50, "-o", color=colour, label=f"{label} p50", markersize=4)
        line.set_gid(f"{slug(label)}-p50")
        (tail,) = ax.plot(x, p99, "--", color=colour, alpha=0.6, linewidth=1)
        tail.set_gid(f"{slug(label)}-p99")
        for p, px, py in zip(points, x, p50, strict=True):
            ax.annotate(str(p.clients), (px, py), textcoords="offset points", xytext=(3, 4),
                        fontsize=7, color=colour)  # fmt: skip
        foot = knee(points)
        if foot is not None:
            ax.plot([foot.blocks_per_s / 1000], [max(foot.rtt_p50_us, 1.0)], "o", markersize=11,
                    markerfacecolor="none", markeredgecolor=colour)  # fmt: skip
        drawn += 1
    ax.set_yscale("log")
    ax.set_xlabel("thousands of 8 KiB blocks per second")
    ax.set_ylabel("client RTT µs (p50 solid, p99 dashed; log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="upper left")


def draw_wall(rows: Sequence[Mapping[str, Any]], title: str) -> dict[str, bytes]:
    """The wall as {"png": bytes, "svg": bytes} (the caller writes them)."""
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    _draw(fig, rows, title)
    fig.tight_layout()
    out = {}
    for suffix in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=suffix, dpi=DPI, metadata=_metadata(suffix))
        out[suffix] = buf.getvalue()
    return out


def _metadata(suffix: str) -> dict[str, Any]:
    """No creation date in the files, so a re-render of the same sweep is the same file."""
    return {"Date": None} if suffix == "svg" else {"Software": "stackprof"}


def point_text(p: SeriesPoint) -> str:
    return f"{p.clients} clients: {p.blocks_per_s:,.0f} blocks/s, p50 {p.rtt_p50_us:,.0f} µs"
