"""The PF_PACKET path on the real kernel: two namespaces joined by veth (root)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from pyroute2 import IPRoute

from servers import frames, reassembly, socket_filter, tpacket
from servers.neighbours import NeighbourCache
from servers.netns_exec import NetnsProcess
from servers.payload import MAX_DATAGRAM
from servers.topology import NETNS_DIR, PREFIX, Topology, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]
PORT = 7000
T = TypeVar("T")


def in_ns(ns: str, func: Callable[[], T]) -> T:
    """func's result, computed by a thread inside namespace ns."""
    result: list[T] = []
    run_in_netns(ns, lambda: result.append(func()))
    return result[0]


def link_mac(ns: str, ifname: str) -> bytes:
    with IPRoute(netns=ns) as ipr:
        text = ipr.get_links(ifname=ifname)[0].get_attr("IFLA_ADDRESS")
    return frames.mac_to_bytes(text)


def flush_neighbours() -> None:
    """ip neigh flush all (IPv4) in the calling thread's namespace."""
    with IPRoute() as ipr:
        for entry in ipr.get_neighbours(family=socket.AF_INET):
            ipr.neigh("del", dst=entry.get_attr("NDA_DST"), ifindex=entry["ifindex"])


def our_namespaces() -> list[str]:
    return [n for n in os.listdir(NETNS_DIR) if n.startswith(f"{PREFIX}{os.getpid()}-")]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    yield
    assert our_namespaces() == []


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(1500) as topology:
        yield topology


def test_kernel_accepts_our_fragments(topo: Topology) -> None:
    """(a) frames built and fragmented here reach a plain UDP socket intact."""
    payload = bytes(i % 253 for i in range(8192))
    receiver = in_ns(topo.server_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with receiver:
        receiver.bind((topo.server_ip, PORT))
        receiver.settimeout(2.0)

        def send() -> int:
            cfg = tpacket.ring_config(tpacket.TPACKET_V2, topo.mtu, ring_bytes=1 << 18)
            with tpacket.PacketRing(topo.client_if, cfg, socket_filter.DROP_ALL_FILTER) as ring:
                with NeighbourCache(listen=False) as neigh:
                    mac = neigh.lookup(topo.server_ip)
                out = frames.udp_frames(
                    mac, ring.mac, topo.client_ip, topo.server_ip, 40000, PORT, payload, 4321, 1500
                )
                for frame in out:
                    ring.send(frame)
                return len(out)

        assert in_ns(topo.client_ns, send) == 6
        data, (addr, sport) = receiver.recvfrom(MAX_DATAGRAM)
    assert data == payload
    assert (addr, sport) == (topo.client_ip, 40000)


@pytest.mark.parametrize("version", [tpacket.TPACKET_V2, tpacket.TPACKET_V3])
def test_ring_captures_kernel_fragments(topo: Topology, version: int) -> None:
    """(b) a kernel-fragmented 8192-byte datagram is captured and reassembled exactly."""
    payload = os.urandom(8192)
    cfg = tpacket.ring_config(version, topo.mtu, frames_per_block=8, block_timeout_ms=2)
    program = socket_filter.udp_service_filter(topo.server_ip, PORT)
    ring = in_ns(topo.server_ns, lambda: tpacket.PacketRing(topo.server_if, cfg, program))
    with ring:

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"not for the service", (topo.server_ip, PORT + 1))
                sock.sendto(payload, (topo.server_ip, PORT))

        run_in_netns(topo.client_ns, send)
        got: list[tpacket.RxFrame] = []
        deadline = time.monotonic() + 2.0
        while len(got) < 6 and time.monotonic() < deadline:
            ring.wait(50)
            got += ring.receive()
        reasm = reassembly.Reassembler()
        packets = [frames.parse_frame(f.data) for f in got]
        complete = [w for p in packets if (w := reasm.add(p, time.monotonic())) is not None]
        counters = ring.counters
    assert len(got) == 6, "the filter admits the 6 fragments, not the other port"
    assert {p.ident for p in packets} == {packets[0].ident}
    (segment,) = complete
    udp = frames.parse_udp(packets[0].src, packets[0].dst, segment)
    assert (udp.dport, udp.payload) == (PORT, payload)
    if version == tpacket.TPACKET_V3:
        assert counters.blocks >= 1 and counters.frames == 6


def open_icmp_counter(ns: str) -> socket.socket:
    """A raw ICMP socket in ns: every ICMP message arriving there is queued on it."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setblocking(False)
        return sock

    return in_ns(ns, make)


def count_icmp(sock: socket.socket, limit: int = 10000) -> int:
    count = 0
    while count < limit:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1
    return count


def port_unreachable_seen(topo: Topology, icmp: socket.socket, port: int) -> bool:
    """Whether a datagram to port draws an ICMP error to the client (bounded wait)."""

    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((topo.server_ip, port))
            sock.send(b"probe")
            sock.settimeout(0.5)
            try:
                sock.recv(100)
            except ConnectionRefusedError:
                return True
            except TimeoutError:
                return False
            return False

    refused = in_ns(topo.client_ns, probe)
    return refused and count_icmp(icmp) == 1


def run_server_and_load(
    topo: Topology, version: int, response_size: int, request_size: int = 512
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The packet server and 4 closed-loop clients for one second; both reports."""
    server_args = ["--ifname", topo.server_if, "--ip", topo.server_ip, "--port", str(PORT)]
    server_args += ["--response-size", str(response_size), "--version", str(version)]
    server_args += ["--block-timeout-ms", "2"]
    load_args = ["--server", topo.server_ip, "--port", str(PORT), "--clients", "4"]
    load_args += ["--duration", "1", "--timeout", "0.5", "--request-size", str(request_size)]
    load_args += ["--response-size", str(response_size)]
    with NetnsProcess(topo.server_ns, "packet_server", server_args) as server:
        assert server.read_line(10.0) == "ready"
        with NetnsProcess(topo.client_ns, "loadgen", load_args) as load:
            load_report = json.loads(load.finish(15.0).strip().splitlines()[-1])
        server.signal(15)
        server_report = json.loads(server.finish(5.0).strip().splitlines()[-1])
    return load_report, server_report


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("mtu", [1500, 9000])
@pytest.mark.parametrize("response_size", [1024, 8192])
def test_packet_server_answers_clients(version: int, mtu: int, response_size: int) -> None:
    """(c) closed-loop plain UDP clients get verified responses and no ICMP error."""
    with Topology(mtu) as topo:
        icmp = open_icmp_counter(topo.client_ns)
        with icmp:
            assert port_unreachable_seen(topo, icmp, PORT), "the ICMP detector must work"
            load, server = run_server_and_load(topo, version, response_size)
            icmp_errors = count_icmp(icmp)
    assert load["received"] > 20 and load["failed_clients"] == 0
    assert load["bad"] == 0 and load["timeouts"] == 0
    assert load["errors"] == 0, "ECONNREFUSED: the kernel answered a request"
    assert icmp_errors == 0
    assert server["responses"] >= load["received"]
    assert server["bad_frames"] == 0 and server["send_errors"] == 0
    assert server["version"] == version and server["mtu"] == mtu
    fragments = -(-(response_size + 8) // frames.fragment_payload_size(mtu))
    assert server["frames_sent"] == server["responses"] * fragments
    if version == 3:
        assert server["ring"]["blocks"] > 0 and server["frames_per_block"] >= 1


def test_packet_server_reassembles_fragmented_requests() -> None:
    """Requests of 4096 bytes at MTU 1500 arrive in 3 fragments each."""
    with Topology(1500) as topo:
        load, server = run_server_and_load(topo, 2, 1024, request_size=4096)
    assert load["received"] > 20 and load["bad"] == 0 and load["errors"] == 0
    assert server["reassembly"]["completed"] == server["datagrams"]
    assert server["reassembly"]["fragments"] == 3 * server["datagrams"]
    assert server["frames_received"] == server["reassembly"]["fragments"]


def test_neighbour_resolution_from_empty_cache(topo: Topology) -> None:
    """(d) with the table flushed, lookup makes the kernel ARP and returns the peer's MAC."""
    expected = link_mac(topo.client_ns, topo.client_if)

    def resolve() -> tuple[bytes, dict[str, int], bytes | None]:
        flush_neighbours()
        with IPRoute() as ipr:
            assert not list(ipr.get_neighbours(family=socket.AF_INET))
        with NeighbourCache(resolve_timeout=2.0) as neigh:
            start = time.monotonic()
            mac = neigh.lookup(topo.client_ip)
            assert time.monotonic() - start < 2.0
            assert neigh.lookup(topo.client_ip) == mac
            flush_neighbours()
            deadline = time.monotonic() + 2.0
            while neigh.counters["removals"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            again = neigh.lookup(topo.client_ip)
            return mac, dict(neigh.counters), again

    mac, counters, again = in_ns(topo.server_ns, resolve)
    assert mac == expected and again == expected
    assert counters["resolutions"] == 2 and counters["hits"] == 1
    assert counters["removals"] == 1, "the listener saw the entry go"


def test_neighbour_unresolvable_is_bounded(topo: Topology) -> None:
    """An address on the link that nobody answers fails within the timeout."""
    missing = topo.server_ip.rsplit(".", 1)[0] + ".3"

    def resolve() -> float:
        with NeighbourCache(resolve_timeout=0.3, listen=False) as neigh:
            start = time.monotonic()
            with pytest.raises(OSError):
                neigh.lookup(missing)
            return time.monotonic() - start

    assert in_ns(topo.server_ns, resolve) < 1.0


def test_guard_socket_blocks_port_unreachable(topo: Topology) -> None:
    """The drop-all UDP socket alone keeps the kernel from answering with ICMP."""
    from servers.packet_server import open_guard_socket

    icmp = open_icmp_counter(topo.client_ns)
    with icmp:
        assert port_unreachable_seen(topo, icmp, PORT)
        guard = in_ns(topo.server_ns, lambda: open_guard_socket(topo.server_ip, PORT))
        with guard:
            assert not port_unreachable_seen(topo, icmp, PORT)
            guard.setblocking(False)
            with pytest.raises(BlockingIOError):
                guard.recv(100)
