"""``stackprof lms serve|load``: the seed paper's Lock Management Server, or its clients,
standalone (on loopback or in a network namespace), for ``attach`` to watch as a service
stackprof did not start.

The profiler never imports the servers: this command runs them as a program
(``python -m servers.lms_serve`` / ``servers.lms_load``, inside ``ip netns exec`` with
``--netns``), passes its output through and exits with its status.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from profiler.errors import SessionError, UsageError

STOP_TIMEOUT_S = 15.0
CLIENT_TRANSPORT = {"tcp": "tcp", "rds": "rds"}  # the others' clients are plain UDP


def _option(args: argparse.Namespace, name: str) -> list[str]:
    value = getattr(args, name)
    return [] if value is None else [f"--{name.replace('_', '-')}", str(value)]


def command(args: argparse.Namespace) -> list[str]:
    """The program's command line for args."""
    common = ["--port", str(args.port), "--servers", str(args.servers)]
    common += ["--request-size", str(args.request_size), *_option(args, "cpu")]
    if args.verb == "serve":
        argv = ["servers.lms_serve", "--transport", args.transport, "--bind", args.bind]
        argv += [*_option(args, "ifname"), "--serve-us", str(args.serve_us)]
        argv += ["--duration", str(args.duration), *common]
        for name in ("frames_per_block", "block_timeout_ms", "batch"):
            argv += _option(args, name)
    else:
        argv = ["servers.lms_load", "--server", args.server]
        argv += ["--transport", CLIENT_TRANSPORT.get(args.transport, "udp")]
        argv += ["--clients", str(args.clients), "--think-us", str(args.think_us)]
        argv += ["--blocks", str(args.blocks), "--duration", str(args.duration)]
        argv += ["--workers", str(args.workers), *common]
    program = [sys.executable, "-m", *argv]
    return ["ip", "netns", "exec", args.netns, *program] if args.netns else program


def check(args: argparse.Namespace) -> None:
    """Bad input before anything starts."""
    if args.netns and not Path("/run/netns", args.netns).exists():
        raise UsageError(f"network namespace {args.netns!r} not found in /run/netns")
    if args.port + args.servers - 1 > 65535:
        raise UsageError("the port range passes 65535")
    if args.verb == "serve" and args.transport.startswith("packet-") and not args.ifname:
        raise UsageError(f"--transport {args.transport} needs --ifname (the interface of --bind)")
    if (args.netns or args.transport.startswith("packet-")) and os.geteuid() != 0:
        raise UsageError("namespaces and PF_PACKET need root")


def run(args: argparse.Namespace) -> int:
    check(args)
    root = Path(__file__).resolve().parent.parent.parent
    env = dict(os.environ)
    if (root / "servers").is_dir():  # a source checkout; an installed wheel has servers too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(command(args), env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)  # the servers stop and report what they served
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code == 2:
        raise UsageError(f"lms {args.verb}: the program refused its arguments")
    if code:
        raise SessionError(f"lms {args.verb} failed (exit status {code})")
    return 0
