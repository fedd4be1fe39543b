"""What several commands share: root, saved runs in and out, the live view."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from profiler import atomic
from profiler.errors import UsageError
from profiler.run import Run, default_trace_path
from profiler.views.console import output_console, plain_console
from profiler.views.live import LiveView


def need_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("tracing needs root (BPF and network namespaces)")


def live_view(no_live: bool) -> LiveView:
    """The live screen on a terminal; with --no-live or off a terminal only the final
    tables, printed once (as wide as views.console makes them)."""
    return LiveView(plain_console() if no_live else output_console())


def save(run: Run, args: argparse.Namespace, several: bool = False) -> None:
    """Save under traces/ (or --out: a file, or a folder when several runs are made)."""
    default = default_trace_path(run.meta)
    out = args.out / default.name if several and args.out else args.out
    path = run.save(out or default)
    if args.json and not several:
        write_summary(run, args.json)
    print(f"saved {path}", file=sys.stderr)


def write_summary(run: Run, path: Path) -> None:
    """The ``--json`` document, atomically."""
    atomic.write_text(path, json.dumps(run.summary(), indent=1))


def save_interval(run: Run, args: argparse.Namespace) -> None:
    """One interval of a run that goes on until stopped: its own file, numbered, in
    --out (a folder) or traces/."""
    default = default_trace_path(run.meta, args.out or Path("traces"))
    path = run.save(default.with_name(f"{default.stem}-i{run.meta['interval']:04d}.json"))
    print(f"saved {path}", file=sys.stderr)


def writable(path: Path | None, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written: a file's folder
    must exist; a folder (made when missing) must sit in a writable one."""
    if path is None:
        return
    where = path if folder or path.is_dir() else path.parent
    if folder:
        while not where.exists() and where != where.parent:
            where = where.parent
    if not where.is_dir():
        raise UsageError(f"{path}: folder {where} does not exist")
    if not os.access(where, os.W_OK):
        raise UsageError(f"{path}: folder {where} is not writable")


def load_run(path: Path) -> Run:
    """A saved run; a file that is not one is bad input."""
    try:
        return Run.load(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
