"""``stackprof report FILE``: a saved run re-rendered (a sweep's folder: the sweep)."""

from __future__ import annotations

import argparse

from profiler.commands import sweep
from profiler.commands.common import load_run, readable_run
from profiler.views.console import output_console
from profiler.views.report import render_report


def check(args: argparse.Namespace) -> None:
    if args.file.is_dir():
        sweep.check_folder(args.file, getattr(args, "json", None))
        return
    readable_run(args.file)


def run(args: argparse.Namespace) -> int:
    if args.file.is_dir():
        return sweep.render_folder(args.file, getattr(args, "json", None))
    output_console().print(render_report(load_run(args.file)))
    return 0
