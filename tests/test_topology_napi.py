"""The lab's veth receiving through NAPI/GRO as a NIC driver does (``Topology(rx="napi")``),
or through netif_rx (the default), proved by counting net:* tracepoints in tracefs for
8 KiB UDP datagrams both ways, fragmented (MTU 1500) and whole (MTU 9000)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from pyroute2 import netns

from profiler import tracefs
from profiler.tracefs import TRACEFS, Counts
from servers.topology import Topology, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and tracefs"),
    pytest.mark.skipif(not (TRACEFS / "events/net").is_dir(), reason="no tracefs net events"),
]
# The receive-side events that name the device (the *_exit ones do not).
EVENTS = (
    "napi_gro_receive_entry",
    "napi_gro_frags_entry",
    "netif_receive_skb_entry",
    "netif_receive_skb_list_entry",
    "netif_receive_skb",
    "netif_rx_entry",
    "netif_rx",
)
PAYLOAD = 8192
DATAGRAMS = 10
TAG = "napi"  # the tracefs instance: stackprof-napi-<pid>


def instance_dir() -> Path:
    return tracefs.instance_dir(TAG)


def net_events(devices: list[str]) -> AbstractContextManager[Callable[[], Counts]]:
    """EVENTS of devices counted in a tracefs instance of our own (profiler.tracefs):
    on every exit each event's enable and filter are put back, the instance removed."""
    return tracefs.net_events(devices, EVENTS, TAG)


def udp_socket(ns: str) -> socket.socket:
    made: list[socket.socket] = []
    run_in_netns(ns, lambda: made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
    made[0].settimeout(2.0)
    return made[0]


def ip_packet_lengths(mtu: int, payload: int = PAYLOAD) -> Counter[int]:
    """skb->len (IP header on) of each packet or fragment of one UDP datagram."""
    rest, step = payload + 8, (mtu - 20) // 8 * 8
    sizes = Counter[int]()
    while rest > 0:
        sizes[20 + min(rest, step)] += 1
        rest -= step
    return sizes


def exchange(topo: Topology, rounds: int) -> Counts:
    """rounds 8 KiB datagrams client → server, each echoed back, warmed up (ARP) first."""
    server, client = udp_socket(topo.server_ns), udp_socket(topo.client_ns)
    with server, client:
        server.bind((topo.server_ip, 7001))
        client.sendto(b"w", (topo.server_ip, 7001))
        _, peer = server.recvfrom(100)
        server.sendto(b"w", peer)
        client.recv(100)
        with net_events([topo.client_if, topo.server_if]) as read:
            for _ in range(rounds):
                client.sendto(b"x" * PAYLOAD, (topo.server_ip, 7001))
                data, peer = server.recvfrom(65535)
                server.sendto(data, peer)
                assert len(data) == PAYLOAD and len(client.recv(65535)) == PAYLOAD
            return read()


def features(ns: str, ifname: str) -> str:
    out: list[str] = []
    run_in_netns(
        ns,
        lambda: out.append(
            subprocess.run(
                ["ethtool", "-k", ifname], capture_output=True, text=True, timeout=10
            ).stdout
        ),
    )
    return out[0]


def top_level_state() -> dict[str, str]:
    return {e: (TRACEFS / "events/net" / e / "enable").read_text() for e in EVENTS}


# The event each mode enters the stack by; netif_receive_skb follows in both.
ENTRY = {"napi": {"napi_gro_receive_entry"}, "backlog": {"netif_rx_entry", "netif_rx"}}


@pytest.mark.parametrize("rx", ["napi", "backlog"])
@pytest.mark.parametrize("mtu", [1500, 9000])
def test_each_fragment_enters_by_the_mode_s_tracepoint(mtu: int, rx: str) -> None:
    """Both ways, every IP packet or fragment (by its length) is seen once by the mode's
    entry event and once by netif_receive_skb (GRO merges none), and no other event of
    EVENTS fires for our devices; tracefs and the namespaces are left as found."""
    before = top_level_state()
    with Topology(mtu, rx=rx) as topo:
        gro = "on" if rx == "napi" else "off"
        for ns, ifname in ((topo.client_ns, topo.client_if), (topo.server_ns, topo.server_if)):
            assert f"generic-receive-offload: {gro}" in features(ns, ifname)
        counts = exchange(topo, DATAGRAMS)
        receivers = (topo.server_if, topo.client_if)  # of the requests, of the responses
    wanted = {size: n * DATAGRAMS for size, n in ip_packet_lengths(mtu).items()}
    assert sum(wanted.values()) == DATAGRAMS * (6 if mtu == 1500 else 1)
    expected = ENTRY[rx] | {"netif_receive_skb"}
    for dev in receivers:
        for event in expected:
            assert {s: counts[event, dev, s] for s in wanted} == wanted, (event, dev, counts)
    assert not {key for key in counts if key[0] not in expected}, counts
    assert not [n for n in netns.listnetns() if n.startswith(f"sp{os.getpid()}-")]
    assert not instance_dir().exists() and top_level_state() == before


def test_the_tracefs_helper_cleans_up_after_an_error() -> None:
    before = top_level_state()
    with pytest.raises(KeyError), net_events(["lo"]):
        assert (instance_dir() / "events/net/netif_rx/enable").read_text().strip() == "1"
        raise KeyError("boom")
    assert not instance_dir().exists() and top_level_state() == before


def test_an_unknown_receive_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="backlog, napi"):
        Topology(rx="xdp")
