"""The lab: a private topology, a reference server and closed-loop clients, traced.

What ``stackprof trace`` runs: :class:`~servers.topology.Topology` and
:class:`~servers.workload.Workload` composed under a profiler session
(:mod:`profiler.session`), the run's metadata saying how it was made, and what
the applications themselves counted recorded beside what the kernel saw. The
servers may import the profiler; the profiler imports this module only in its
``trace`` command.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from profiler import phases
from profiler.errors import SessionError
from profiler.hooks import KINDS, RING_TRANSPORTS
from profiler.loader import HookChoice, Tracer, make_config
from profiler.run import Run
from profiler.session import Update, base_meta, finish, hooks_or_fail, interruptible, watch
from servers.topology import Topology
from servers.workload import ServiceOptions, TransportOptions, Workload, WorkloadResult


@dataclass
class TraceOptions:
    """What ``stackprof trace`` was asked for."""

    transport: str = "udp"
    mtu: int = 9000
    duration: float = 10.0
    clients: int = 8
    request_size: int = 512
    response_size: int = 8192
    server_cpu: int | None = None
    client_cpu: int | None = None
    port: int = 7000
    rx: str = "backlog"  # how veth receives (servers.topology.RX_MODES)
    scope: str = "both"  # the traced host: both namespaces, or "server" / "client" only
    kinds: tuple[str, ...] = KINDS
    skip: tuple[str, ...] = ()
    options: TransportOptions = field(default_factory=TransportOptions)
    service: ServiceOptions = field(default_factory=ServiceOptions)
    sample: int = 1  # follow 1 datagram in this many
    detail: str = "full"  # or lean: hooks.LEAN_BOUNDARIES only


def trace(opts: TraceOptions, on_update: Update) -> Run:
    """Run the reference workload on a private topology under the tracer."""
    choice = hooks_or_fail(opts.kinds, opts.skip, opts.transport, opts.detail)
    run = Run(
        meta={
            **base_meta(choice, opts.transport, opts.detail, one_sided=opts.scope != "both"),
            "mtu": opts.mtu,
            "rx": opts.rx,
            "clients": opts.clients,
            "request_size": opts.request_size,
            "response_size": opts.response_size,
            "duration_s": opts.duration,
            "server_cpu": opts.server_cpu,
            "client_cpu": opts.client_cpu,
            "port": opts.port,
            "transport_options": asdict(opts.options),
            "workload": opts.service.name,
            "sample": opts.sample,
            **({"lms": asdict(opts.service)} if opts.service.name == "lms" else {}),
        }
    )
    try:
        return _trace_in_topology(opts, choice, run, on_update)
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise SessionError(f"{opts.transport} run failed: {exc}") from exc


class _Topology(Topology):
    """The lab's topology, with the ``topology`` phase of :mod:`profiler.phases` reached
    halfway through its set-up: namespaces and veth made, links not yet up."""

    def wait_link_up(self, timeout: float = 2.0) -> None:
        phases.reached("topology")
        super().wait_link_up(timeout)


def _trace_in_topology(opts: TraceOptions, choice: HookChoice, run: Run, on_update: Update) -> Run:
    """The topology, the tracer and the workload, each torn down whatever happens."""
    with _Topology(opts.mtu, rx=opts.rx) as topo:
        inodes = topo.netns_inodes()
        scope = {"both": list(inodes), "server": [inodes.server], "client": [inodes.client]}
        run.meta["scope"] = {"namespaces": opts.scope, "inodes": scope[opts.scope]}
        config = make_config(
            opts.port,
            opts.port + opts.service.servers - 1,
            netns=scope[opts.scope],
            ring=RING_TRANSPORTS.get(opts.transport, "none"),
            residence=bool(run.meta["residence"]),
            sample=opts.sample,
            lean=opts.detail == "lean",
        )
        with Tracer(config, choice) as tracer:
            phases.reached("attach")
            with Workload(
                topo,
                transport=opts.transport,
                clients=opts.clients,
                request_size=opts.request_size,
                response_size=opts.response_size,
                duration=opts.duration,
                server_cpu=opts.server_cpu,
                client_cpu=opts.client_cpu,
                port=opts.port,
                options=opts.options,
                service=opts.service,
            ) as workload:
                result = None
                with interruptible(run):
                    phases.reached("load")
                    running = workload.loadgen.running
                    watch(tracer, run, opts.duration, lambda: not running(), on_update)
                    result = workload.wait()
                    time.sleep(0.2)
                finish(tracer, run)
    if result is not None:
        record_workload(run, result)
    return run


def record_workload(run: Run, result: WorkloadResult) -> None:
    """What the applications themselves counted, beside what the kernel saw."""
    run.client_rtt = result.rtt
    run.datagrams.setdefault("request", {})["sent"] = result.sent
    run.datagrams.setdefault("response", {})["sent"] = int(
        result.server.get("responses", result.received)
    )
    run.meta["client"] = {
        "sent": result.sent,
        "received": result.received,
        "bad": result.bad,
        "timeouts": result.timeouts,
        "duration_s": result.duration_s,
    }
    run.meta["server"] = result.server
