"""``stackprof compare A B``: two saved runs, stage by stage."""

from __future__ import annotations

import argparse

from profiler import diagnose
from profiler.commands.common import (
    distinct,
    load_run,
    outcome,
    readable_run,
    writable,
    write_json,
)
from profiler.views.compare import render_compare
from profiler.views.console import output_console


def check(args: argparse.Namespace) -> None:
    readable_run(args.a)
    readable_run(args.b)
    out = getattr(args, "json", None)
    writable(out, what="--json")
    for given in (args.a, args.b):  # A may be B: comparing a run with itself is harmless
        distinct([("--json", out), ("a compared run", given)])


def run(args: argparse.Namespace) -> int:
    a, b = load_run(args.a), load_run(args.b)
    labels = (args.a.stem, args.b.stem)
    diagnosis = diagnose.diagnose_pair(a, b, diagnose.labels(a, b, labels))
    output_console().print(render_compare(a, b, labels, diagnosis))
    if getattr(args, "json", None):
        doc = {"a": str(args.a), "b": str(args.b), "diagnosis": diagnosis}
        return outcome(write_json(args.json, doc))  # said in one line if it cannot be
    return 0
