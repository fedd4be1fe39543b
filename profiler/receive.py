"""Doctor's receive path: the receive tracepoints this kernel has, the attach kind that
loads for each, and which of them fire in a short self-test.

The tracepoints are those of the catalogue's device receive (``dev_rx``: netif_rx and
the NAPI/GRO entries, hooked together) and stack entry (``stack_rx``: netif_receive_skb).
The attach kind is the hook choice's where a chosen candidate holds the tracepoint (the
same proof ``stackprof trace`` runs), else proved for the tracepoint alone.

The self-test, per receive mode: two throwaway network namespaces joined by a veth pair,
a few 8 KiB UDP datagrams (fragmented at MTU 1500) from the client's to a bound socket of
the server's, and each tracepoint's events on the server's veth counted in a tracefs
instance of our own (:mod:`profiler.tracefs`). ``backlog`` is veth's default (netif_rx);
``napi`` turns GRO on and TSO off on both ends (``ethtool -K``), so that veth receives
through its NAPI ring and napi_gro_receive, as a NIC driver does. The namespaces are
anonymous: made by ``unshare`` in a short-lived thread (the caller's own namespace never
changes), held only by open file descriptors and the sockets made in them, never named
under /run/netns; when those close, or the process ends however it ends, the kernel
removes them and the veth with them. Nothing here imports the lab (servers/).
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

from profiler import loader, tracefs
from profiler.diagnosis import ReceiveHook, RxSelfTest
from profiler.errors import one_line
from profiler.hooks import BY_NAME, Candidate

RECEIVE_POINTS = ("dev_rx", "stack_rx")
TRACEPOINT_KINDS = ("tp_btf", "raw_tp")
MODES = ("backlog", "napi")
NAPI_ETHTOOL = ("gro", "on", "tso", "off")
MTU = 1500
PAYLOAD = 8192
DATAGRAMS = 3
PORT = 7001
CLIENT_IP, SERVER_IP, PREFIXLEN = "10.253.0.1", "10.253.0.2", 30
TIMEOUT = 1.0  # per datagram, and for both veth ends to come up
DEVICE_PREFIX = "spdoc"  # + pid + mode initial + c/s: unique on the host, ≤ 15 bytes
CLONE_NEWNET = 0x40000000
CLIENT_IFINDEX = 10  # the server's end gets 2, the first free one in its namespace
NOT_ROOT = "not proved: loading BPF needs root"

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def tracepoints() -> list[tuple[str, str]]:
    """(hook point, tracepoint) of each receive tracepoint in the catalogue, in its order."""
    found: dict[str, str] = {}
    for point in RECEIVE_POINTS:
        for c in BY_NAME[point].candidates:
            if c.kind in TRACEPOINT_KINDS:
                for name in c.target.split(","):
                    found.setdefault(name, point)
    return [(point, name) for name, point in found.items()]


def _exists(name: str) -> bool | None:
    try:
        if not (tracefs.TRACEFS / "events").is_dir():
            return None
        return (tracefs.TRACEFS / "events/net" / name).is_dir()
    except OSError:
        return None


def _prove_alone(point: str, name: str, exists: bool | None, path: Path) -> ReceiveHook:
    """The first attach kind that loads and attaches the tracepoint's program alone."""
    if exists is False:
        return ReceiveHook(name, point, False, None, ["not in this kernel (no net:" + name + ")"])
    refused: list[str] = []
    for kind in TRACEPOINT_KINDS:
        candidate = Candidate(kind, name, (f"{kind}_{name}",))
        why = loader.try_candidate(candidate, path)
        if why is None:
            return ReceiveHook(name, point, exists, kind, refused)
        refused.append(f"{candidate.label}: {why}")
    return ReceiveHook(name, point, exists, None, refused)


def receive_hooks(
    choice: loader.HookChoice, path: Path = loader.OBJECT, root: bool = True
) -> list[ReceiveHook]:
    """Per receive tracepoint: whether it exists and the attach kind that loads for it."""
    hooks = []
    for point, name in tracepoints():
        if not root:
            hooks.append(ReceiveHook(name, point, None, None, [NOT_ROOT]))
            continue
        exists = _exists(name)
        chosen = choice.chosen.get(point)
        if chosen is not None and name in chosen.target.split(","):
            before = [c.label for c in BY_NAME[point].candidates if name in c.target.split(",")]
            refused = [r for r in choice.refused.get(point, []) if r.split(": ")[0] in before]
            hooks.append(ReceiveHook(name, point, exists, chosen.kind, refused))
        else:
            hooks.append(_prove_alone(point, name, exists, path))
    return hooks


def in_netns(fd: int | None, func: Callable[[], T], what: str) -> T:
    """func's result, run in a short-lived thread that entered the network namespace of
    fd (None: a new one); only that thread moves. Failures say what was being done."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            status = _libc.unshare(CLONE_NEWNET) if fd is None else _libc.setns(fd, CLONE_NEWNET)
            if status != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            result.append(func())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="stackprof-doctor-netns")
    thread.start()
    thread.join()
    if errors:
        if isinstance(errors[0], Exception):
            raise RuntimeError(f"{what}: {one_line(errors[0])}") from errors[0]
        raise errors[0]
    return result[0]


def _own_netns() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _add_veth(ifname: str, peer: str, peer_netns: int) -> None:
    """The veth pair, its ends' ifindexes apart: in fresh namespaces both would be 2, and a
    veth whose iflink (its peer's ifindex) equals its own gets no urgent link event
    (linkwatch_urgent_event), only the rate-limited kind: its qdisc, and so its traffic,
    came up to a second later (measured ~1 s in 2 of 2 modes; with this, ~5 ms)."""
    with IPRoute() as ipr:
        ipr.link(
            "add",
            index=CLIENT_IFINDEX,
            ifname=ifname,
            kind="veth",
            peer={"ifname": peer, "net_ns_fd": peer_netns},
        )


def _configure(ifname: str, address: str, mtu: int) -> None:
    """No IPv6 (no DAD or MLD on the device), lo and the veth end up with MTU and address."""
    for conf in ("all", "default"):
        path = Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6")
        if path.exists():
            path.write_text("1")
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, state="up")
        (index,) = ipr.link_lookup(ifname=ifname)
        ipr.link("set", index=index, mtu=mtu)
        ipr.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
        ipr.link("set", index=index, state="up")


def _napi_receive(ifname: str) -> None:
    """GRO on, TSO off (what makes veth receive through NAPI), GRO read back."""
    try:
        subprocess.run(
            ["ethtool", "-K", ifname, *NAPI_ETHTOOL], check=True, capture_output=True, timeout=5
        )
        shown = subprocess.run(
            ["ethtool", "-k", ifname], check=True, capture_output=True, text=True, timeout=5
        ).stdout
    except FileNotFoundError as exc:
        raise OSError(exc.errno, "needs ethtool") from exc
    if "generic-receive-offload: on" not in shown:
        raise OSError(0, "GRO stayed off")


def _wait_up(ifname: str, deadline: float) -> None:
    with IPRoute() as ipr:
        while ipr.get_links(ifname=ifname)[0].get_attr("IFLA_OPERSTATE") != "UP":
            if time.monotonic() > deadline:
                raise OSError(0, f"not up after {TIMEOUT} s")
            time.sleep(0.005)


def _udp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


class VethPair:
    """Client and server: anonymous network namespaces held by fds, joined by a veth pair
    that receives as rx says. Closing the fds (and the sockets) removes everything."""

    def __init__(self, rx: str, mtu: int = MTU) -> None:
        if rx not in MODES:
            raise ValueError(f"rx must be one of {', '.join(MODES)}, got {rx!r}")
        self.rx, self.mtu = rx, mtu
        stem = f"{DEVICE_PREFIX}{os.getpid()}{rx[0]}"
        self.client_if, self.server_if = stem + "c", stem + "s"
        self.fds: list[int] = []

    def __enter__(self) -> VethPair:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def _create(self) -> None:
        for side in ("client", "server"):
            self.fds.append(in_netns(None, _own_netns, f"new {side} namespace"))
        client, server = self.fds
        veth = functools.partial(_add_veth, self.client_if, self.server_if, server)
        in_netns(client, veth, "veth")
        ends = ((client, self.client_if, CLIENT_IP), (server, self.server_if, SERVER_IP))
        for fd, ifname, ip in ends:
            in_netns(fd, functools.partial(_configure, ifname, ip, self.mtu), f"set up {ifname}")
            if self.rx == "napi":
                in_netns(fd, functools.partial(_napi_receive, ifname), f"ethtool -K {ifname}")
        deadline = time.monotonic() + TIMEOUT
        for fd, ifname, _ in ends:
            in_netns(fd, functools.partial(_wait_up, ifname, deadline), f"{ifname} carrier")

    def socket(self, side: str) -> socket.socket:
        sock = in_netns(self.fds[("client", "server").index(side)], _udp_socket, "socket")
        sock.settimeout(TIMEOUT)
        return sock


def _exchange(pair: VethPair, events: list[str], result: RxSelfTest) -> None:
    """Datagrams client → server, counted on the server's veth (ARP resolved before)."""
    with pair.socket("server") as server, pair.socket("client") as client:
        server.bind((SERVER_IP, PORT))
        client.sendto(b"w", (SERVER_IP, PORT))
        server.recv(16)
        with tracefs.net_events([pair.server_if], events, "doctor") as read:
            for _ in range(result.datagrams):
                client.sendto(bytes(result.payload), (SERVER_IP, PORT))
                try:
                    result.received += len(server.recv(65535)) == result.payload
                except TimeoutError:
                    break  # reported as fewer received than sent
            counts = read()
    for event in events:
        if tracefs.available([event]) is None:
            result.fired[event] = sum(n for (e, _, _), n in counts.items() if e == event)


def run_mode(rx: str, events: list[str], datagrams: int = DATAGRAMS) -> RxSelfTest:
    """One receive mode of the self-test; a failure is reported, never raised."""
    result = RxSelfTest(rx, datagrams, PAYLOAD, MTU)
    try:
        with VethPair(rx) as pair:
            _exchange(pair, events, result)
    except Exception as exc:  # noqa: BLE001 - doctor reports it
        result.error = one_line(exc)
    return result


def self_test(root: bool) -> list[RxSelfTest]:
    """Each receive mode's datagrams and the receive tracepoints that fired for them."""
    events = [name for _, name in tracepoints()]
    why = "needs root: network namespaces and tracefs" if not root else tracefs.available()
    if why:
        return [RxSelfTest(rx, DATAGRAMS, PAYLOAD, MTU, skipped=why) for rx in MODES]
    tracefs.remove_stale_instances()
    return [run_mode(rx, events) for rx in MODES]
