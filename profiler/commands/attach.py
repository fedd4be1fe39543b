"""``stackprof attach``: the probes on traffic stackprof did not start, filtered by
ports, sending pid, network namespaces and cgroup."""

from __future__ import annotations

import argparse

from profiler import abi, session
from profiler.commands.common import (
    live_view,
    need_root,
    save,
    save_interval,
    writable,
    write_summary,
)
from profiler.commands.metrics import endpoint, feeding
from profiler.errors import SessionError, UsageError
from profiler.session import AttachOptions, netns_inode

MAX_NETNS = abi.CONST["SP_MAX_NETNS"]


def netns_inodes(names: str) -> list[int]:
    """Inodes of the comma-separated namespaces (names in /run/netns, or paths)."""
    inodes = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        try:
            inodes.append(netns_inode(name))
        except SessionError as exc:
            raise UsageError(str(exc)) from None
    if not 0 < len(inodes) <= MAX_NETNS:
        raise UsageError(f"--netns takes 1 to {MAX_NETNS} namespaces, not {len(inodes)}")
    return inodes


def run(args: argparse.Namespace) -> int:
    need_root()
    until_stopped = args.duration == 0
    writable(args.out, folder=until_stopped)
    writable(args.json)
    netns = netns_inodes(args.netns) if args.netns else None
    cgroup_id = None
    if args.cgroup:
        if not args.cgroup.is_dir():
            raise UsageError(f"cgroup {args.cgroup} is not a directory")
        cgroup_id = args.cgroup.stat().st_ino
    opts = AttachOptions(
        port_lo=args.ports[0],
        port_hi=args.ports[1],
        duration=args.duration,
        pid=args.pid,
        netns=netns,
        cgroup_id=cgroup_id,
        kinds=args.hooks,
        skip=args.skip,
        save_every=args.save_every,
    )
    intervals = (lambda part: save_interval(part, args)) if until_stopped else None
    with endpoint(args.metrics) as served, live_view(args.no_live) as view:
        traced = session.attach(opts, feeding(served, view.update), intervals)
        view.update(traced, traced.meta)
    if not until_stopped:
        save(traced, args)
    elif args.json:  # the intervals are the saved runs
        write_summary(traced, args.json)
    if traced.meta.get("interrupted"):
        raise KeyboardInterrupt
    return 0
