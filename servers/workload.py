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

Services (``ServiceOptions``): ``echo``, one server answering at once, driven by
:mod:`servers.loadgen`; ``lms``, the seed paper's Lock Management Server
(:mod:`servers.lms`): ``servers`` server processes of the transport on ports
``port .. port + servers - 1``, each making consistent-read copies of cached 8 KiB
blocks, driven by :mod:`servers.lms_load` (``clients`` per server, requests hashed to
a server, exponential think time). The server counters are summed over the servers
(:func:`merge_server_reports`; each server's own in ``per_server``).
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
from servers import lms
from servers.netns_exec import NetnsProcess
from servers.payload import check_size
from servers.service import merge_server_reports
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
    responses go out in one sendmmsg. packet-v3: requests per ring block and the
    block retire timeout (rounded up to whole ms, the kernel's unit); ``auto`` for
    either adapts it to the input (:mod:`servers.adaptive`);
    packet-v2 has no blocks to retire, frames_per_block only shapes its ring.
    """

    batch: int | str = 64  # or "auto" (servers.adaptive)
    batch_timeout_ms: float = 10.0
    send_batch: bool = False
    frames_per_block: int | str = 32  # or "auto" (servers.adaptive)
    block_timeout_ms: float = 10.0

    def check(self) -> None:
        """ValueError, naming the field, for values a server would refuse."""
        if self.batch != "auto" and not (isinstance(self.batch, int) and 1 <= self.batch <= 1024):
            raise ValueError(f"batch must be 1..1024 or auto, got {self.batch}")
        if not self.batch_timeout_ms > 0:
            raise ValueError(f"batch_timeout_ms must be > 0, got {self.batch_timeout_ms}")
        fpb = self.frames_per_block
        if fpb != "auto" and not (isinstance(fpb, int) and fpb >= 1):
            raise ValueError(f"frames_per_block must be >= 1 or auto, got {fpb}")
        if not self.block_timeout_ms > 0:
            raise ValueError(f"block_timeout_ms must be > 0, got {self.block_timeout_ms}")


SERVICES = ("echo", "lms")


@dataclass(frozen=True)
class ServiceOptions:
    """What the servers do. ``echo``: one server, an instant answer. ``lms``: ``servers``
    Lock Management Servers (CR copies costing ``serve_us`` CPU µs each), clients thinking
    ``think_us`` on average between requests over ``blocks`` blocks (``workers``: client
    processes, 0 auto)."""

    name: str = "echo"
    servers: int = 1
    serve_us: float = lms.DEFAULT_SERVE_US
    think_us: float = lms.DEFAULT_THINK_US
    blocks: int = lms.DEFAULT_BLOCKS
    cache_blocks: int = lms.DEFAULT_CACHE_BLOCKS
    workers: int = 0

    @classmethod
    def lms(cls, **kwargs: Any) -> ServiceOptions:
        return cls(**{"name": "lms", "servers": lms.DEFAULT_SERVERS, **kwargs})

    def check(self) -> None:
        """ValueError, naming the field, for values the servers or clients would refuse."""
        if self.name not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, got {self.name!r}")
        if not 1 <= self.servers <= 64 or (self.name == "echo" and self.servers != 1):
            raise ValueError(f"servers must be 1..64 (echo: 1), got {self.servers}")
        if not 0 <= self.serve_us <= 1e6 or self.think_us < 0:
            raise ValueError("serve_us must be 0..1e6 and think_us >= 0")
        if self.blocks < 1 or self.cache_blocks < 1 or self.workers < 0:
            raise ValueError("blocks and cache_blocks must be >= 1, workers >= 0")

    def server_args(self) -> list[str]:
        if self.name == "echo":
            return []
        return ["--workload", "lms", "--serve-us", repr(float(self.serve_us)),
                "--cache-blocks", str(self.cache_blocks)]  # fmt: skip


def server_args(
    transport: str,
    ifname: str,
    ip: str,
    port: int,
    response_size: int,
    options: TransportOptions,
    request_size: int = 512,
) -> list[str]:
    """The command line of transport's server on (ifname, ip) (without --sink/--cpu)."""
    common = ["--port", str(port), "--response-size", str(response_size)]
    if transport.startswith("packet-"):
        return [
            "--ifname", ifname, "--ip", ip, *common,
            "--version", transport[-1], "--request-size", str(request_size),
            "--frames-per-block", str(options.frames_per_block),
            "--block-timeout-ms", str(math.ceil(options.block_timeout_ms)),
        ]  # fmt: skip
    args = ["--bind", ip, *common]
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
        service: ServiceOptions | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "blast" and transport not in BLAST_TRANSPORTS:
            raise ValueError(f"mode blast needs a transport in {BLAST_TRANSPORTS}, not {transport}")
        options = options or TransportOptions()
        options.check()
        service = service or ServiceOptions()
        service.check()
        if service.name == "lms" and mode != "pingpong":
            raise ValueError("the lms service runs closed-loop clients only (mode pingpong)")
        if clients < 1 or duration <= 0 or request_timeout <= 0:
            raise ValueError("clients must be >= 1, duration and request_timeout > 0")
        check_size("request_size", request_size)
        check_size("response_size", response_size)
        if service.name == "lms":
            lms.check_request_size(request_size)
        self.topology = topology
        self.transport = transport
        self.mode = mode
        self.duration = duration
        self.request_timeout = request_timeout
        self.options = options
        self.service = service
        self.ports = list(range(port, port + service.servers))
        self.servers = [
            NetnsProcess(
                topology.server_ns,
                SERVERS[transport],
                server_args(
                    transport,
                    topology.server_if,
                    topology.server_ip,
                    p,
                    response_size,
                    options,
                    request_size,
                )
                + service.server_args()
                + (["--sink"] if mode == "blast" else []),
                server_cpu,
            )
            for p in self.ports
        ]
        self.server = self.servers[0]
        load_args = ["--server", topology.server_ip, "--port", str(port)]
        load_args += ["--clients", str(clients)]
        load_args += ["--transport", CLIENT_TRANSPORT.get(transport, "udp")]
        load_args += ["--request-size", str(request_size), "--response-size", str(response_size)]
        load_args += ["--duration", str(duration), "--timeout", str(request_timeout)]
        if service.name == "lms":
            load_args += ["--servers", str(service.servers), "--think-us", str(service.think_us)]
            load_args += ["--blocks", str(service.blocks), "--workers", str(service.workers)]
            module = "lms_load"
        else:
            load_args += ["--mode", mode]
            module = "loadgen"
        self.loadgen = NetnsProcess(topology.client_ns, module, load_args, client_cpu)

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
        """Start the servers, wait for each one's ``ready``, then start the load generator."""
        for server in self.servers:
            server.start()
        for server in self.servers:
            line = server.read_line(READY_TIMEOUT_S)
            if line.strip() != "ready":
                raise RuntimeError(f"server said {line!r} instead of ready")
        self.loadgen.start()

    @property
    def server_pid(self) -> int:
        """The (first) server's pid."""
        return self.server.pid

    @property
    def server_pids(self) -> list[int]:
        return [server.pid for server in self.servers]

    @property
    def loadgen_pid(self) -> int:
        """The load generator's parent process (its clients are its children)."""
        return self.loadgen.pid

    def client_pids(self) -> list[int]:
        """The load generator and its client processes (its process group), while they run."""
        return _group_members(self.loadgen.pid)

    def pids(self) -> list[int]:
        """Every workload process now running: server, load generator, clients."""
        return [*self.server_pids, *self.client_pids()]

    def wait(self, timeout: float | None = None) -> WorkloadResult:
        """Wait for the load generator to finish, then stop the server and collect both."""
        if timeout is None:
            timeout = self.duration + self.request_timeout + _SLACK_S
        load = _report(self.loadgen, timeout)
        for proc in self.servers:
            proc.signal(signal.SIGTERM)
        server = merge_server_reports([_report(proc, STOP_TIMEOUT_S) for proc in self.servers])
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
        for server in self.servers:
            server.kill()


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
