"""``stackprof trace``: the lab's reference workload traced, one run per transport;
several transports are compared side by side. The one command that loads the servers."""

from __future__ import annotations

import argparse
import json

from profiler import atomic
from profiler.commands.common import live_view, need_root, save, writable
from profiler.commands.metrics import endpoint, feeding
from profiler.errors import UsageError
from profiler.transports import TRANSPORTS, rds_missing
from profiler.views.console import output_console
from profiler.views.transports import comparison_rows, render_transports
from servers import lab
from servers.workload import TransportOptions


def runnable_transports(asked: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The transports to run, and those left out of ``all`` with the reason.
    RDS asked for by name on a kernel without it is a usage error."""
    skipped: dict[str, str] = {}
    why = rds_missing() if "rds" in asked else None
    if why:
        if asked != TRANSPORTS:
            raise UsageError(f"transport rds: {why}")
        skipped["rds"] = why
    return tuple(t for t in asked if t not in skipped), skipped


def trace_options(args: argparse.Namespace, transport: str) -> lab.TraceOptions:
    return lab.TraceOptions(
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


def run(args: argparse.Namespace) -> int:
    """One traced run per transport asked for; several are compared side by side."""
    transports, skipped = runnable_transports(args.transport)
    if args.duration == 0:
        raise UsageError("trace's load is bounded in time: --duration must be over 0")
    need_root()
    writable(args.out, folder=len(args.transport) > 1)
    writable(args.json)
    runs = []
    for transport in transports:
        labels = {"transport": transport}
        with endpoint(args.metrics, labels) as served, live_view(args.no_live) as view:
            traced = lab.trace(trace_options(args, transport), feeding(served, view.update))
            view.update(traced, traced.meta)
        save(traced, args, several=len(args.transport) > 1)
        if traced.meta.get("interrupted"):
            raise KeyboardInterrupt
        runs.append(traced)
    if len(args.transport) > 1:
        output_console().print(render_transports(runs, skipped))
        if args.json:
            doc = {
                "comparison": comparison_rows(runs, skipped),
                "runs": [r.summary() for r in runs],
            }
            atomic.write_text(args.json, json.dumps(doc, indent=1))
    return 0
