"""``stackprof compare A B``: two saved runs, stage by stage."""

from __future__ import annotations

import argparse

from profiler.commands.common import load_run
from profiler.views.compare import render_compare
from profiler.views.console import output_console


def run(args: argparse.Namespace) -> int:
    a, b = load_run(args.a), load_run(args.b)
    output_console().print(render_compare(a, b, (args.a.stem, args.b.stem)))
    return 0
