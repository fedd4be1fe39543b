"""``stackprof merge RUN… -o OUT``: runs of several hosts or intervals summed into one
saved run, for ``report``, ``compare`` and ``export``."""

from __future__ import annotations

import argparse
import sys

from profiler.commands.common import load_run, writable
from profiler.errors import UsageError
from profiler.merge import MergeError, merge


def run(args: argparse.Namespace) -> int:
    writable(args.out)
    runs = [load_run(path) for path in args.files]
    try:
        merged = merge(runs, [str(path) for path in args.files])
    except MergeError as exc:
        raise UsageError(f"cannot merge: {exc}") from None
    print(f"saved {merged.save(args.out)}", file=sys.stderr)
    return 0
