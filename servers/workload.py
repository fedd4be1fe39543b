"""The reference workload as a Python API: server and load generator in a Topology.

::

    with Topology(mtu=1500) as topo, Workload(topo, clients=8, duration=5) as load:
        pids = load.pids()          # to filter on, while it runs
        result = load.wait()        # after the load generator finished

The server is started first and must print ``ready`` (its socket is bound)
before the load generator starts, so no request meets a closed port.

Transports (``TRANSPORTS``, named once in :mod:`profiler.transports`): ``udp``
(:mod:`servers.udp_server`), ``udp-mmsg`` (:mod:`servers.mmsg_server`, batched
receive), ``packet-v2``/``packet-v3`` (:mod:`servers.packet_server`: requests read
from a TPACKET ring on the server's veth, responses sent as frames built in user
space), all with UDP clients; ``tcp`` (:mod:`servers.tcp_server`) with TCP clients;
``rds`` (:mod:`servers.rds_server`, where the kernel has RDS-TCP) with RDS clients.
``TransportOptions`` tunes them.
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler.transports import TRANSPORTS
from servers.netns_exec import NetnsProcess
from servers.payload import check_size
from servers.topology import Topology

SERVERS = {
    "udp": "udp_server",
    "udp-mmsg": "mmsg_server",
    "packet-v2": "packet_server",
    "packet-v3": "packet_server",
    "tcp": "tcp_server",
    "rds": "rds_server",
}
CLIENT_TRANSPORT = {"tcp": "tcp", "rds": "rds"}  # the others' clients are plain UDP
BLAST_TRANSPORTS = ("udp", "udp-mmsg", "packet-v2", "packet-v3")  # servers with --sink
MODES = ("pingpong", "blast")
READY_TIMEOUT_S = 30.0  # Python under emulation (the guest tests) starts ~13x slower
STOP_TIMEOUT_S = 5.0
# On top of duration + request timeout: fork, start-up, report. Only a bound on a
# wait that normally ends on time; under software emulation (the guest tests)
# Python start-up and RDS-TCP connection set-up have taken more than 10 s.
_SLACK_S = 60.0


@dataclass(frozen=True)
class TransportOptions:
    """The knobs of the transports that have any; each server ignores the others' knobs.

    udp-mmsg: recvmmsg vlen (``batch``) and timeout, and whether the batch's
    responses go out in one sendmmsg. packet-v3: frames per ring block and the
    block retire timeout (rounded up to whole ms, the kernel's unit);
    packet-v2 has no blocks to retire, frames_per_block only shapes its ring.
    """

    batch: int = 64
    batch_timeout_ms: float = 10.0
    send_batch: bool = False
    frames_per_block: int = 32
    block_timeout_ms: float = 10.0

    def check(self) -> None:
        """ValueError, naming the field, for values a server would refuse."""
        if not 1 <= self.batch <= 1024:
            raise ValueError(f"batch must be 1..1024, got {self.batch}")
        if not self.batch_timeout_ms > 0:
            raise ValueError(f"batch_timeout_ms must be > 0, got {self.batch_timeout_ms}")
        if self.frames_per_block < 1:
            raise ValueError(f"frames_per_block must be >= 1, got {self.frames_per_block}")
        if not self.block_timeout_ms > 0:
            raise ValueError(f"block_timeout_ms must be > 0, got {self.block_timeout_ms}")


def server_args(
    transport: str, topology: Topology, port: int, response_size: int, options: TransportOptions
) -> list[str]:
    """The command line of transport's server (without --sink/--cpu)."""
    common = ["--port", str(port), "--response-size", str(response_size)]
    if transport.startswith("packet-"):
        return [
            "--ifname", topology.server_if, "--ip", topology.server_ip, *common,
            "--version", transport[-1],
            "--frames-per-block", str(options.frames_per_block),
            "--block-timeout-ms", str(math.ceil(options.block_timeout_ms)),
        ]  # fmt: skip
    args = ["--bind", topology.server_ip, *common]
    if transport == "udp-mmsg":
        args += ["--batch", str(options.batch)]
        args += ["--batch-timeout-ms", repr(float(options.batch_timeout_ms))]
        args += ["--send-batch"] if options.send_batch else []
    return args


@dataclass
class WorkloadResult:
    """What the load generator and the server counted in one run."""

    sent: int
    received: int
    bad: int
    timeouts: int
    duration_s: float
    rtt: HdrHistogram
    server: dict[str, Any] = field(default_factory=dict)
    late: int = 0
    errors: int = 0
    failed_clients: int = 0
    mode: str = "pingpong"

    @property
    def server_datagrams_per_s(self) -> float:
        """Datagrams the server received per second (the blast benchmark's throughput)."""
        return self.server.get("datagrams", 0) / self.duration_s if self.duration_s else 0.0


def _report(proc: NetnsProcess, timeout: float) -> dict[str, Any]:
    """The last JSON line proc prints before it exits."""
    for line in reversed(proc.finish(timeout).strip().splitlines()):
        if line.startswith("{"):
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise RuntimeError(f"servers.{proc.module} printed no report: {proc.describe_exit()}")


class Workload:
    """Server in the server namespace, closed-loop clients in the client namespace.

    A context manager: ``__exit__`` kills every process it started, whatever
    happened. ``mode="blast"`` runs the server as a sink and the clients fire
    and forget (throughput benchmark).
    """

    def __init__(
        self,
        topology: Topology,
        transport: str = "udp",
        clients: int = 8,
        request_size: int = 512,
        response_size: int = 8192,
        duration: float = 5.0,
        server_cpu: int | None = None,
        client_cpu: int | None = None,
        port: int = 7000,
        mode: str = "pingpong",
        request_timeout: float = 1.0,
        options: TransportOptions | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "blast" and transport not in BLAST_TRANSPORTS:
            raise ValueError(f"mode blast needs a transport in {BLAST_TRANSPORTS}, not {transport}")
        options = options or TransportOptions()
        options.check()
        if clients < 1 or duration <= 0 or request_timeout <= 0:
            raise ValueError("clients must be >= 1, duration and request_timeout > 0")
        check_size("request_size", request_size)
        check_size("response_size", response_size)
        self.topology = topology
        self.transport = transport
        self.mode = mode
        self.duration = duration
        self.request_timeout = request_timeout
        self.options = options
        serve = server_args(transport, topology, port, response_size, options)
        serve += ["--sink"] if mode == "blast" else []
        load_args = ["--server", topology.server_ip, "--port", str(port)]
        load_args += ["--clients", str(clients), "--mode", mode]
        load_args += ["--transport", CLIENT_TRANSPORT.get(transport, "udp")]
        load_args += ["--request-size", str(request_size), "--response-size", str(response_size)]
        load_args += ["--duration", str(duration), "--timeout", str(request_timeout)]
        self.server = NetnsProcess(topology.server_ns, SERVERS[transport], serve, server_cpu)
        self.loadgen = NetnsProcess(topology.client_ns, "loadgen", load_args, client_cpu)

    def __enter__(self) -> Workload:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server, wait for its ``ready``, then start the load generator."""
        self.server.start()
        line = self.server.read_line(READY_TIMEOUT_S)
        if line.strip() != "ready":
            raise RuntimeError(f"server said {line!r} instead of ready")
        self.loadgen.start()

    @property
    def server_pid(self) -> int:
        return self.server.pid

    @property
    def loadgen_pid(self) -> int:
        """The load generator's parent process (its clients are its children)."""
        return self.loadgen.pid

    def client_pids(self) -> list[int]:
        """The load generator and its client processes (its process group), while they run."""
        return _group_members(self.loadgen.pid)

    def pids(self) -> list[int]:
        """Every workload process now running: server, load generator, clients."""
        return [self.server_pid, *self.client_pids()]

    def wait(self, timeout: float | None = None) -> WorkloadResult:
        """Wait for the load generator to finish, then stop the server and collect both."""
        if timeout is None:
            timeout = self.duration + self.request_timeout + _SLACK_S
        load = _report(self.loadgen, timeout)
        self.server.signal(signal.SIGTERM)
        server = _report(self.server, STOP_TIMEOUT_S)
        return WorkloadResult(
            sent=load["sent"],
            received=load["received"],
            bad=load["bad"],
            timeouts=load["timeouts"],
            duration_s=load["duration_s"],
            rtt=HdrHistogram.decode(load["rtt_hdr"].encode("ascii")),
            server=server,
            late=load.get("late", 0),
            errors=load.get("errors", 0),
            failed_clients=load.get("failed_clients", 0),
            mode=load.get("mode", self.mode),
        )

    def stop(self) -> None:
        """Kill every process of the workload (idempotent)."""
        self.loadgen.kill()
        self.server.kill()


def _group_members(pgid: int) -> list[int]:
    """Pids in process group pgid (field 5 of /proc/<pid>/stat)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)
