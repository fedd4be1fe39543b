"""``stackprof report FILE``: a saved run re-rendered."""

from __future__ import annotations

import argparse

from profiler.commands.common import load_run
from profiler.views.console import output_console
from profiler.views.report import render_report


def run(args: argparse.Namespace) -> int:
    output_console().print(render_report(load_run(args.file)))
    return 0
