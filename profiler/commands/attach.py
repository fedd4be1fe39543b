"""``stackprof attach``: the probes on traffic stackprof did not start, filtered by
ports, sending pid, network namespaces and cgroup. A filtered target that goes away
ends the run, which is saved with a one-line note."""

from __future__ import annotations

import argparse
import sys

from profiler import abi, session, targets
from profiler.commands.common import (
    check_hooks,
    check_listen,
    need_root,
    outcome,
    save,
    save_interval,
    write_summary,
)
from profiler.commands.tracing import check_outputs, shown
from profiler.errors import UsageError
from profiler.hooks import unused_boundaries
from profiler.run import Run
from profiler.session import AttachOptions

MAX_NETNS = abi.CONST["SP_MAX_NETNS"]
SAVE_EVERY_S = 600.0  # --save-every's default: 10 minutes

Target = targets.Process | targets.Namespace | targets.Cgroup


def filters(args: argparse.Namespace) -> list[Target]:
    """The process, namespaces and cgroup asked for, each proved to exist."""
    found: list[Target] = []
    if args.pid is not None:
        found.append(targets.process(args.pid))
    if args.netns is not None:
        found += targets.namespaces(args.netns, MAX_NETNS)
    if args.cgroup is not None:
        found.append(targets.cgroup(args.cgroup))
    return found


def check(args: argparse.Namespace) -> None:
    """Every argument, before any work: UsageError for the first that cannot work."""
    need_root()
    if args.save_every is not None and args.duration != 0:
        raise UsageError("--save-every cuts a run that goes on until stopped: add --duration 0")
    check_outputs(args, folder=args.duration == 0)
    filters(args)
    check_hooks(args.hooks, args.skip, unused_boundaries("attach", args.detail))
    check_listen(args.metrics)


def said_attached(run: Run) -> None:
    """--verbose: how long from start to probes attached, and whether the hook choice
    was remembered or proved."""
    how = "remembered hook choice" if run.meta.get("hooks_cached") else "hooks proved"
    print(
        f"stackprof: probes attached {run.meta['attached_after_s']:.2f} s after start ({how})",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    until_stopped = args.duration == 0
    watched = filters(args)
    netns = [t.inode for t in watched if isinstance(t, targets.Namespace)] or None
    cgroup = next((t.inode for t in watched if isinstance(t, targets.Cgroup)), None)
    opts = AttachOptions(
        port_lo=args.ports[0],
        port_hi=args.ports[1],
        duration=args.duration,
        pid=args.pid,
        netns=netns,
        cgroup_id=cgroup,
        kinds=args.hooks,
        skip=args.skip,
        save_every=args.save_every or SAVE_EVERY_S,
        gone=lambda: targets.first_gone(watched),
        sample=args.sample,
        detail=args.detail,
        on_attached=said_attached if args.verbose else None,
    )
    problems: list[str] = []

    def interval(part: Run) -> None:
        problems.extend(save_interval(part, args))

    traced = shown(
        args, lambda update: session.attach(opts, update, interval if until_stopped else None)
    )
    if traced.meta.get("ended"):
        print(
            f"stackprof: {traced.meta['ended']}: run ended, what it measured is saved",
            file=sys.stderr,
        )
    if not until_stopped:
        problems += save(traced, args)
    elif problems:  # each said as it happened
        problems = [f"{len(problems)} interval(s) could not be written where asked (see above)"]
    if until_stopped and args.json:  # the intervals are the saved runs
        problems += write_summary(traced, args.json)
    return outcome(problems, interrupted=bool(traced.meta.get("interrupted")))
