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

from profiler.cli import UsageError
from profiler.run import Run, default_trace_path
from profiler.session import AttachOptions, SessionError, TraceOptions, netns_inode

AF_RDS = 21
IMPLEMENTED_TRANSPORTS = ("udp",)


def rds_missing() -> str | None:
    """Why RDS cannot be used here, or None if the kernel has it."""
    try:
        socket.socket(AF_RDS, socket.SOCK_SEQPACKET, 0).close()
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return (
                "this kernel has no RDS (socket(AF_RDS) fails: EAFNOSUPPORT; needs the rds module)"
            )
        return f"RDS socket failed: {exc.strerror}"
    return None


def _check_transport(transport: str) -> None:
    if transport == "rds":
        why = rds_missing()
        if why:
            raise UsageError(f"transport rds: {why}")
    if transport not in IMPLEMENTED_TRANSPORTS:
        raise UsageError(
            f"transport {transport} is not available in this build "
            f"(available: {', '.join(IMPLEMENTED_TRANSPORTS)})"
        )


def _need_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("tracing needs root (BPF and network namespaces)")


def _live(no_live: bool) -> Any:
    from profiler.tui import LiveView

    return LiveView(Console(force_terminal=False) if no_live else None)


def _save(run: Run, args: argparse.Namespace) -> None:
    path = run.save(args.out or default_trace_path(run.meta))
    if args.json:
        args.json.write_text(json.dumps(run.summary(), indent=1))
    print(f"saved {path}", file=sys.stderr)


def cmd_trace(args: argparse.Namespace) -> int:
    from profiler import session

    _check_transport(args.transport)
    _need_root()
    opts = TraceOptions(
        transport=args.transport,
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
    )
    with _live(args.no_live) as view:
        run = session.trace(opts, view.update)
        view.update(run, run.meta)
    _save(run, args)
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from profiler import session

    _need_root()
    netns = [netns_inode(args.netns)] if args.netns else None
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
    return 0


def _load(path: Path) -> Run:
    try:
        return Run.load(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from profiler.report import render_report

    Console().print(render_report(_load(args.file)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from profiler.report import render_compare

    Console().print(render_compare(_load(args.a), _load(args.b), (args.a.stem, args.b.stem)))
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
