"""What the two tracing commands, ``trace`` and ``attach``, share around their own work:
the check of where their runs go, and a run shown while it is made (the live view, and
the ``--metrics`` endpoint when asked)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from profiler.commands.common import distinct, live_view, run_output, writable
from profiler.commands.metrics import endpoint, feeding
from profiler.run import Run
from profiler.session import Update


def check_outputs(args: argparse.Namespace, folder: bool) -> None:
    """--out and --json writable and not the same file, before any work. ``folder``:
    --out is a folder of several runs (trace's transports, attach's intervals)."""
    if folder:
        writable(args.out, folder=True, what="--out")
    else:
        run_output(args.out)
    writable(args.json, what="--json")
    distinct([("--out", args.out), ("--json", args.json)])


def shown(
    args: argparse.Namespace, trace: Callable[[Update], Run], labels: Mapping[str, str] = {}
) -> Run:
    """The run trace(update) makes, each refresh on the live view and the --metrics
    endpoint as it comes, and on the view once more when done (the final table)."""
    with endpoint(args.metrics, labels) as served, live_view(args.no_live) as view:
        traced = trace(feeding(served, view.update))
        view.update(traced, traced.meta)
    return traced
