"""The live screen: where each datagram's time goes, redrawn about once a second while a
trace runs, and left on the terminal (or printed once, off a terminal) when it ends."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live

from profiler.paths import run_paths
from profiler.run import Run
from profiler.views.console import output_console
from profiler.views.paths import path_view
from profiler.views.tables import (
    datagram_table,
    header_line,
    hooks_line,
    info_of,
    lost_line,
    missed_line,
    missed_table,
    rtt_line,
)


def render(run: Run, status: Mapping[str, Any], compact: bool = False) -> RenderableType:
    """The whole screen for one moment of a run: under its header what was lost and
    why (incomplete datagrams first). compact (while it runs) fits a terminal: stages
    no hook could observe are left to the 'unobserved' line and the missed counters
    take one line, the residence paths one line each."""
    info = info_of(run, status)
    parts: list[RenderableType] = [header_line(info), lost_line(run)]
    parts += [path_view(run, path, info, compact) for path in run_paths(info)]
    parts += [datagram_table(run, losses_under=False), rtt_line(run)]
    parts += [missed_line(run) if compact else missed_table(run), hooks_line(info)]
    return Group(*parts)


class LiveView:
    """A once-a-second live screen; without a terminal it prints only the final tables."""

    def __init__(self, console: Console | None = None, refresh_s: float = 1.0) -> None:
        self.console = console or output_console()
        self.refresh_s = refresh_s
        self._live: Live | None = None
        self._latest: tuple[Run, Mapping[str, Any]] | None = None
        self._rendered_at = 0.0

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Take over the terminal, if there is one."""
        if self.console.is_terminal and self._live is None:
            self._live = Live(
                console=self.console, refresh_per_second=1 / self.refresh_s, auto_refresh=True
            )
            self._live.start()

    def update(self, run: Run, status: Mapping[str, Any]) -> None:
        """Note the latest state; redraw at most once per refresh period to spare the CPU."""
        self._latest = (run, dict(status))
        now = time.monotonic()
        if self._live is not None and now - self._rendered_at >= self.refresh_s:
            self._live.update(render(run, status, compact=True))
            self._rendered_at = now

    def stop(self) -> None:
        """Leave the final state on screen (or print it once when not on a terminal)."""
        final = render(*self._latest) if self._latest else None
        if self._live is not None:
            if final is not None:
                self._live.update(final, refresh=True)
            self._live.stop()
            self._live = None
        elif final is not None:
            self.console.print(final)
        self._latest = None
