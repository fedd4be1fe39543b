"""``stackprof export FILE OUT``: a saved run in the format OUT's suffix names."""

from __future__ import annotations

import argparse
import sys

from profiler import phases
from profiler.commands.common import distinct, load_run, readable_run, writable
from profiler.errors import SessionError, UsageError, one_line
from profiler.export import WRITERS, export


def check(args: argparse.Namespace) -> None:
    readable_run(args.file)
    if args.out.suffix.lower() not in WRITERS:
        known = ", ".join(WRITERS)
        raise UsageError(f"{args.out}: unknown export format {args.out.suffix!r} (use {known})")
    writable(args.out)
    distinct([("FILE", args.file), ("OUT", args.out)])


def run(args: argparse.Namespace) -> int:
    saved = load_run(args.file)
    try:
        with phases.during("save"):
            path = export(saved, args.out)
    except OSError as exc:  # the run itself is safe in FILE
        raise SessionError(f"cannot write {args.out}: {one_line(exc)}") from None
    print(f"wrote {path}", file=sys.stderr)
    return 0
