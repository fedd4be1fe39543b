"""Topology on the real kernel: namespaces, veth, MTU, reachability, cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from servers.topology import Topology, remove_leftovers, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]
REPO = Path(__file__).resolve().parent.parent


def ours(prefix: str) -> list[str]:
    return [name for name in netns.listnetns() if name.startswith(prefix)]


def socket_in(ns: str) -> socket.socket:
    """A UDP socket that belongs to namespace ns (created by a thread inside it)."""
    made: list[socket.socket] = []
    run_in_netns(ns, lambda: made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
    made[0].settimeout(2.0)
    return made[0]


def mtu_of(ns: str, ifname: str) -> int:
    with IPRoute(netns=ns) as ipr:
        return int(ipr.get_links(ifname=ifname)[0].get_attr("IFLA_MTU"))


@pytest.mark.parametrize("mtu", [68, 1500, 9000, 65535])
def test_mtu_on_both_ends(mtu: int) -> None:
    with Topology(mtu) as topo:
        assert topo.mtu == mtu
        assert mtu_of(topo.client_ns, topo.client_if) == mtu
        assert mtu_of(topo.server_ns, topo.server_if) == mtu


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_udp_exchange_between_namespaces(mtu: int) -> None:
    with Topology(mtu) as topo:
        server, client = socket_in(topo.server_ns), socket_in(topo.client_ns)
        with server, client:
            server.bind((topo.server_ip, 7001))
            client.sendto(b"x" * 8000, (topo.server_ip, 7001))
            data, addr = server.recvfrom(65535)
            assert len(data) == 8000 and addr[0] == topo.client_ip
            server.sendto(data[:100], addr)
            assert client.recv(65535) == data[:100]


def test_names_fit_ifnamsiz_and_addresses_are_private() -> None:
    topo = Topology()
    pid = os.getpid()
    assert (topo.client_ns, topo.server_ns) == (f"sp{pid}-cli", f"sp{pid}-srv")
    assert max(len(topo.client_if), len(topo.server_if)) <= 15
    assert topo.client_ip.startswith("10.213.") and topo.server_ip.startswith("10.213.")


@pytest.mark.parametrize("mtu", [67, 70000, 0, -1])
def test_invalid_mtu_raises(mtu: int) -> None:
    with pytest.raises(ValueError, match="68..65535"):
        Topology(mtu)


def test_netns_inodes_are_the_kernel_ones() -> None:
    with Topology() as topo:
        seen: list[int] = []
        for ns in (topo.client_ns, topo.server_ns):
            run_in_netns(ns, lambda: seen.append(os.stat("/proc/thread-self/ns/net").st_ino))
        assert tuple(topo.netns_inodes()) == tuple(seen)
        assert seen[0] != seen[1] != os.stat("/proc/self/ns/net").st_ino


def test_everything_removed_after_exit() -> None:
    with Topology() as topo:
        assert ours(topo.client_ns) and ours(topo.server_ns)
    assert not ours(f"sp{os.getpid()}-")


def test_everything_removed_after_exception_inside_with() -> None:
    with pytest.raises(KeyError), Topology():
        raise KeyError("boom")
    assert not ours(f"sp{os.getpid()}-")


def test_everything_removed_when_creation_fails_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError("injected")

    monkeypatch.setattr(Topology, "_configure", fail)
    with pytest.raises(OSError, match="injected"), Topology():
        pass
    assert not ours(f"sp{os.getpid()}-")


def test_live_owner_is_not_a_leftover() -> None:
    with Topology() as topo:
        assert topo.client_ns not in remove_leftovers()
        assert ours(topo.client_ns)


CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    from servers.topology import Topology
    topo = Topology().__enter__()
    sleeper = subprocess.Popen(["ip", "netns", "exec", topo.server_ns, "sleep", "30"],
                               start_new_session=True)
    print(topo.client_ns, topo.server_ns, sleeper.pid, flush=True)
    time.sleep(30)
    """
)


def test_leftovers_of_a_sigkilled_run_are_removed() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert child.stdout is not None
        client_ns, server_ns, sleeper = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert set(ours(f"sp{child.pid}-")) == {client_ns, server_ns}
    start = time.monotonic()
    assert set(remove_leftovers()) >= {client_ns, server_ns}
    assert time.monotonic() - start < 2.0
    assert not ours(f"sp{child.pid}-")
    assert remove_leftovers() == []
    time.sleep(0.1)
    assert not running(int(sleeper))


def running(pid: int) -> bool:
    """Whether pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
