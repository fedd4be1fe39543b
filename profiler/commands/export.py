"""``stackprof export FILE OUT``: a saved run in the format OUT's suffix names."""

from __future__ import annotations

import argparse

from profiler.commands.common import load_run
from profiler.errors import UsageError
from profiler.export import export


def run(args: argparse.Namespace) -> int:
    try:
        export(load_run(args.file), args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0
