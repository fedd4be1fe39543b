"""Where views are printed, with one width policy.

On a terminal, the terminal as it is. Anywhere else (a pipe, a file, ``--no-live``),
at least ``WIDTH`` columns, so that no table column wraps or is cut.
"""

from __future__ import annotations

from rich.console import Console

WIDTH = 140


def output_console() -> Console:
    """The terminal as it is; on a pipe or a file, wide enough that no column wraps."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, WIDTH))


def plain_console() -> Console:
    """Never a live screen, even on a terminal (``--no-live``); as wide as a pipe's."""
    return Console(force_terminal=False, width=max(Console().width, WIDTH))
