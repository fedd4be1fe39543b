"""``stackprof merge RUN… -o OUT``: runs of several hosts or intervals summed into one
saved run, for ``report``, ``compare`` and ``export``."""

from __future__ import annotations

import argparse

from profiler.commands.common import (
    distinct,
    load_run,
    outcome,
    readable_run,
    save_run,
    writable,
)
from profiler.errors import UsageError
from profiler.merge import MergeError, merge


def check(args: argparse.Namespace) -> None:
    for path in args.files:
        readable_run(path)
    writable(args.out, what="-o")
    distinct([("-o", args.out)] + [(f"RUN {p}", p) for p in args.files])


def run(args: argparse.Namespace) -> int:
    runs = [load_run(path) for path in args.files]
    try:
        merged = merge(runs, [str(path) for path in args.files])
    except MergeError as exc:
        raise UsageError(f"cannot merge: {exc}") from None
    _, problem = save_run(merged, args.out)
    return outcome([problem] if problem else [])
