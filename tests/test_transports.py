"""Every transport of the reference workload serving real traffic across the veth pair (root)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

import pytest
from test_packet_server import count_icmp, open_icmp_counter, our_namespaces, port_unreachable_seen

from profiler.transports import rds_missing
from servers import mmsg_server, packet_server
from servers.topology import Topology
from servers.workload import TRANSPORTS, TransportOptions, Workload, WorkloadResult

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
PORT = 7000
CLIENTS = 4
DURATION_S = 1.0
# RDS only where the kernel has RDS-TCP (not this 6.18: tests/guest/test_guest_rds.py runs it).
HERE_TRANSPORTS = tuple(t for t in TRANSPORTS if t != "rds" or rds_missing() is None)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    yield
    assert our_namespaces() == []


def run(topo: Topology, transport: str, **kwargs: Any) -> WorkloadResult:
    """One short run of transport on topo; kwargs override the Workload defaults used here."""
    kwargs = {"clients": CLIENTS, "duration": DURATION_S, "port": PORT} | kwargs
    with Workload(topo, transport=transport, **kwargs) as load:
        return load.wait()


def assert_served(result: WorkloadResult, clients: int) -> None:
    """Every response verified, none lost, and the server's count agrees with the clients'."""
    server = result.server
    assert result.received > 20 and result.failed_clients == 0
    assert result.bad == 0 and result.timeouts == 0 and result.errors == 0
    assert result.rtt.get_total_count() == result.received
    assert server["requests"] == server["datagrams"] and server["bad_requests"] == 0
    assert result.received <= server["responses"] <= result.received + clients
    assert server["send_errors"] == 0
    assert server["cpu_s"] > 0 and 0.5 * DURATION_S < server["duration_s"] < 5.0


@root
@pytest.mark.root
@pytest.mark.parametrize("response_size", [1024, 8192])
@pytest.mark.parametrize("mtu", [1500, 9000])
@pytest.mark.parametrize("transport", HERE_TRANSPORTS)
def test_transport_serves_verified_responses(transport: str, mtu: int, response_size: int) -> None:
    """Closed-loop clients get intact responses, and no ICMP error reaches them."""
    with Topology(mtu) as topo:
        icmp = open_icmp_counter(topo.client_ns)
        with icmp:
            assert port_unreachable_seen(topo, icmp, PORT + 1), "the ICMP detector must work"
            result = run(topo, transport, response_size=response_size)
            icmp_errors = count_icmp(icmp)
    assert_served(result, CLIENTS)
    assert icmp_errors == 0


def batch_total(server: dict[str, object]) -> tuple[int, int, int]:
    """(datagrams, batches, largest batch) according to the batch-size histogram."""
    sizes = server["batch_sizes"]
    assert isinstance(sizes, dict)
    pairs = [(int(size), count) for size, count in sizes.items()]
    return sum(s * c for s, c in pairs), sum(c for _, c in pairs), max(s for s, _ in pairs)


@root
@pytest.mark.root
@pytest.mark.parametrize("send_batch", [False, True])
def test_mmsg_batches_on_one_shared_cpu(send_batch: bool) -> None:
    """With 8 clients on the server's CPU requests queue up: batches > 1 are taken."""
    cpu = min(os.sched_getaffinity(0))
    options = TransportOptions(send_batch=send_batch)
    with Topology(1500) as topo:
        result = run(topo, "udp-mmsg", clients=8, server_cpu=cpu, client_cpu=cpu, options=options)
    assert_served(result, 8)
    server = result.server
    datagrams, batches, largest = batch_total(server)
    assert datagrams == server["datagrams"] and batches == server["batches"]
    assert 1 < largest <= 64
    assert server["batch_mean"] == pytest.approx(datagrams / batches, abs=1e-3)
    assert server["send_batch"] is send_batch
    expected_calls = batches if send_batch else server["responses"]
    assert server["send_calls"] == expected_calls


@root
@pytest.mark.root
def test_mmsg_batch_limit_is_respected() -> None:
    cpu = min(os.sched_getaffinity(0))
    options = TransportOptions(batch=2, batch_timeout_ms=1.0)
    with Topology(1500) as topo:
        result = run(topo, "udp-mmsg", clients=8, server_cpu=cpu, client_cpu=cpu, options=options)
    assert_served(result, 8)
    assert result.server["batch"] == 2
    assert set(result.server["batch_sizes"]) <= {"1", "2"}


@root
@pytest.mark.root
@pytest.mark.parametrize("clients", [1, 8])
def test_tcp_one_connection_per_client(clients: int) -> None:
    with Topology(1500) as topo:
        result = run(topo, "tcp", clients=clients)
    assert_served(result, clients)
    assert result.server["connections"] == clients
    assert result.server["closed"] == clients, "each client closed its connection at the end"


@root
@pytest.mark.root
@pytest.mark.parametrize("transport", ["packet-v2", "packet-v3"])
def test_packet_ring_options_reach_the_server(transport: str) -> None:
    options = TransportOptions(frames_per_block=64, block_timeout_ms=2.5)
    with Topology(1500) as topo:
        result = run(topo, transport, options=options, duration=0.5)
    assert result.received > 0 and result.bad == 0
    ring = result.server["ring_config"]
    assert ring["frames_per_block"] >= 64, "page rounding may only add slots"
    assert ring["block_timeout_ms"] == 3, "rounded up to whole ms"
    assert result.server["version"] == int(transport[-1])


@root
@pytest.mark.root
def test_mmsg_blast_counts_throughput() -> None:
    with Topology(1500) as topo:
        result = run(topo, "udp-mmsg", clients=2, mode="blast", duration=0.5)
    assert 0 < result.server["datagrams"] <= result.sent
    assert result.server["responses"] == 0 and result.server["batches"] > 0


def test_invalid_transport_options() -> None:
    topo = Topology()
    with pytest.raises(ValueError, match="blast"):
        Workload(topo, transport="tcp", mode="blast")
    with pytest.raises(ValueError, match="batch"):
        Workload(topo, transport="udp-mmsg", options=TransportOptions(batch=0))
    with pytest.raises(ValueError, match="block_timeout_ms"):
        Workload(topo, transport="packet-v3", options=TransportOptions(block_timeout_ms=0))


def parser_default(parse: object, argv: list[str], name: str) -> object:
    assert callable(parse)
    args = parse(argv)
    assert isinstance(args, argparse.Namespace)
    return getattr(args, name)


def test_options_defaults_are_the_servers_defaults() -> None:
    options = TransportOptions()
    udp = ["--bind", "10.0.0.1", "--port", "1"]
    packet = ["--ifname", "x", "--ip", "10.0.0.1", "--port", "1"]
    assert options.batch == parser_default(mmsg_server.parse_args, udp, "batch")
    timeout = parser_default(mmsg_server.parse_args, udp, "batch_timeout_ms")
    assert options.batch_timeout_ms == timeout
    fpb = parser_default(packet_server.parse_args, packet, "frames_per_block")
    assert options.frames_per_block == fpb
    block = parser_default(packet_server.parse_args, packet, "block_timeout_ms")
    assert options.block_timeout_ms == block
    assert TRANSPORTS == ("udp", "udp-mmsg", "packet-v2", "packet-v3", "tcp", "rds")
