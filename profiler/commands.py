"""What each subcommand does with its parsed arguments."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from profiler import abi
from profiler.cli import TRANSPORTS, UsageError
from profiler.run import Run, default_trace_path
from profiler.session import AttachOptions, SessionError, TraceOptions, netns_inode
from servers.rds_server import AF_RDS
from servers.workload import TransportOptions

MAX_NETNS = abi.CONST["SP_MAX_NETNS"]
NO_LIVE_WIDTH = 110  # final tables on a pipe: wide enough for every column unwrapped


def rds_missing() -> str | None:
    """Why RDS cannot be used here, or None if the kernel has it, over TCP (the
    only RDS transport between two namespaces joined by veth)."""
    try:
        socket.socket(AF_RDS, socket.SOCK_SEQPACKET, 0).close()
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return (
                "this kernel has no RDS (socket(AF_RDS) fails: EAFNOSUPPORT; needs the rds module)"
            )
        return f"RDS socket failed: {exc.strerror}"
    if not os.path.isdir("/sys/module/rds_tcp"):
        return "RDS is here but not RDS-TCP, which carries it over veth (modprobe rds_tcp)"
    return None


def runnable_transports(asked: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The transports to run, and those left out of ``all`` with the reason.
    RDS asked for by name on a kernel without it is a usage error."""
    from servers.workload import TRANSPORTS as SERVED

    skipped: dict[str, str] = {}
    why = rds_missing() if "rds" in asked else None
    if why:
        if asked != TRANSPORTS:
            raise UsageError(f"transport rds: {why}")
        skipped["rds"] = why
    return tuple(t for t in asked if t in SERVED and t not in skipped), skipped


def _need_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("tracing needs root (BPF and network namespaces)")


def _live(no_live: bool) -> Any:
    from profiler.tui import LiveView

    return LiveView(Console(force_terminal=False, width=NO_LIVE_WIDTH) if no_live else None)


def output_console() -> Console:
    """The terminal as it is; on a pipe or file, wide enough that no column wraps."""
    console = Console()
    return console if console.is_terminal else Console(width=NO_LIVE_WIDTH)


def _save(run: Run, args: argparse.Namespace, several: bool = False) -> None:
    """Save under traces/ (or --out: a file, or a folder when several runs are made)."""
    default = default_trace_path(run.meta)
    out = args.out / default.name if several and args.out else args.out
    path = run.save(out or default)
    if args.json and not several:
        args.json.write_text(json.dumps(run.summary(), indent=1))
    print(f"saved {path}", file=sys.stderr)


def _trace_options(args: argparse.Namespace, transport: str) -> TraceOptions:
    return TraceOptions(
        transport=transport,
        mtu=args.mtu,
        duration=args.duration,
        clients=args.clients,
        request_size=args.request_size,
        response_size=args.response_size,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        port=args.port,
        kinds=args.hooks,
        skip=args.skip,
        options=TransportOptions(
            batch=args.batch,
            batch_timeout_ms=args.batch_timeout_ms,
            send_batch=args.send_batch,
            frames_per_block=args.frames_per_block,
            block_timeout_ms=args.block_timeout_ms,
        ),
    )


def cmd_trace(args: argparse.Namespace) -> int:
    """One traced run per transport asked for; several are compared side by side."""
    from profiler import session
    from profiler.comparison import comparison_rows, render_transports

    transports, skipped = runnable_transports(args.transport)
    _need_root()
    runs = []
    for transport in transports:
        with _live(args.no_live) as view:
            run = session.trace(_trace_options(args, transport), view.update)
            view.update(run, run.meta)
        _save(run, args, several=len(args.transport) > 1)
        if run.meta.get("interrupted"):
            raise KeyboardInterrupt
        runs.append(run)
    if len(args.transport) > 1:
        output_console().print(render_transports(runs, skipped))
        if args.json:
            doc = {
                "comparison": comparison_rows(runs, skipped),
                "runs": [r.summary() for r in runs],
            }
            args.json.write_text(json.dumps(doc, indent=1))
    return 0


def _netns_inodes(names: str) -> list[int]:
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


def cmd_attach(args: argparse.Namespace) -> int:
    from profiler import session

    _need_root()
    netns = _netns_inodes(args.netns) if args.netns else None
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
    )
    with _live(args.no_live) as view:
        run = session.attach(opts, view.update)
        view.update(run, run.meta)
    _save(run, args)
    if run.meta.get("interrupted"):
        raise KeyboardInterrupt
    return 0


def _load(path: Path) -> Run:
    try:
        return Run.load(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from profiler.report import render_report

    output_console().print(render_report(_load(args.file)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from profiler.report import render_compare

    output_console().print(render_compare(_load(args.a), _load(args.b), (args.a.stem, args.b.stem)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from profiler.export import export

    try:
        export(_load(args.file), args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from profiler import doctor

    return doctor.run(as_json=args.json)


COMMANDS = {
    "trace": cmd_trace,
    "attach": cmd_attach,
    "report": cmd_report,
    "compare": cmd_compare,
    "export": cmd_export,
    "doctor": cmd_doctor,
}


def run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except SessionError as exc:
        print(f"stackprof: {exc}", file=sys.stderr)
        return 1
