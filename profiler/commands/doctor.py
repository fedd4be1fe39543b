"""``stackprof doctor``: what this kernel lets stackprof do, proved, as tables or JSON.

Exit 0 when the core trace can run here, 1 when a required hook point has no hook.
"""

from __future__ import annotations

import argparse
import json
import sys

from profiler.doctor import diagnose
from profiler.views.console import output_console
from profiler.views.doctor import render


def check(args: argparse.Namespace) -> None:
    """Nothing to check: doctor takes no value."""


def run(args: argparse.Namespace) -> int:
    diag = diagnose()
    if args.json:
        sys.stdout.write(json.dumps(diag.as_json(), indent=1) + "\n")
    else:
        output_console().print(render(diag))
    return 0 if diag.core_trace_ok else 1
