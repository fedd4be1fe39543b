"""``stackprof trace``: the lab's reference workload traced, one run per transport;
several transports are compared side by side. The one command that loads the servers."""

from __future__ import annotations

import argparse
import functools

from profiler.commands.common import (
    check_cpu,
    check_hooks,
    check_listen,
    need_root,
    outcome,
    save,
    write_json,
)
from profiler.commands.tracing import check_outputs, shown
from profiler.errors import UsageError
from profiler.hooks import unused_boundaries
from profiler.transports import TRANSPORTS, rds_missing
from profiler.views.console import output_console
from profiler.views.transports import comparison_rows, render_transports
from servers import lab
from servers.lms import REQUEST_MIN as LMS_REQUEST_MIN
from servers.payload import check_size
from servers.workload import ServiceOptions, TransportOptions


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
        rx=args.rx,
        scope=args.scope,
        kinds=args.hooks,
        skip=args.skip,
        options=TransportOptions(
            batch=args.batch,
            batch_timeout_ms=args.batch_timeout_ms,
            send_batch=args.send_batch,
            frames_per_block=args.frames_per_block,
            block_timeout_ms=args.block_timeout_ms,
        ),
        service=service_options(args),
        sample=args.sample,
        detail=args.detail,
    )


def service_options(args: argparse.Namespace) -> ServiceOptions:
    """--workload and its options (lms: 4 servers unless --servers says otherwise)."""
    if getattr(args, "workload", "echo") != "lms":
        if getattr(args, "servers", None) not in (None, 1):
            raise UsageError("--servers is for --workload lms (echo runs one server)")
        return ServiceOptions()
    if args.request_size < LMS_REQUEST_MIN:
        raise UsageError(f"--workload lms needs --request-size >= {LMS_REQUEST_MIN}")
    return ServiceOptions.lms(
        servers=args.servers or 4,
        serve_us=args.serve_us,
        think_us=args.think_us,
        blocks=args.blocks,
    )


def check(args: argparse.Namespace) -> None:
    """Every argument, before any work: UsageError for the first that cannot work."""
    transports, _ = runnable_transports(args.transport)
    if args.duration == 0:
        raise UsageError("trace's load is bounded in time: --duration must be over 0")
    need_root()
    check_outputs(args, folder=len(args.transport) > 1)
    check_cpu(args.server_cpu, "--server-cpu")
    check_cpu(args.client_cpu, "--client-cpu")
    for name in ("request_size", "response_size"):
        try:
            check_size(name, getattr(args, name))
        except ValueError as exc:
            raise UsageError(f"--{name.replace('_', '-')}: {exc}") from None
    for transport in transports:
        check_hooks(args.hooks, args.skip, unused_boundaries(transport, args.detail))
        try:
            trace_options(args, transport).options.check()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    check_listen(args.metrics)


def run(args: argparse.Namespace) -> int:
    """One traced run per transport asked for; several are compared side by side."""
    transports, skipped = runnable_transports(args.transport)
    several = len(args.transport) > 1
    runs, problems = [], []
    for transport in transports:
        trace = functools.partial(lab.trace, trace_options(args, transport))
        traced = shown(args, trace, {"transport": transport})
        problems += save(traced, args, several=several)
        if traced.meta.get("interrupted"):
            return outcome(problems, interrupted=True)
        runs.append(traced)
    if several:
        output_console().print(render_transports(runs, skipped))
        if args.json:
            doc = {
                "comparison": comparison_rows(runs, skipped),
                "runs": [r.summary() for r in runs],
            }
            problems += write_json(args.json, doc)
    return outcome(problems)
