"""Next-hop MAC of a destination from the kernel's FIB and neighbour tables (rtnetlink).

A PF_PACKET sender writes the Ethernet header itself, so it must do what the
kernel's ip_finish_output2 does: route lookup (gateway or directly connected),
then the neighbour entry of the next hop. As the datagram-stack paper's IPCLW
library did, answers are cached per destination and kept in sync by a netlink
listener thread (RTM_NEWNEIGH / RTM_DELNEIGH; route changes drop the cache).

When no usable entry exists the kernel is made to resolve it: a connected UDP
socket sends a zero-length datagram to the discard port (9), which queues on
the INCOMPLETE neighbour and triggers ARP; then we wait, bounded in time, for
the entry to become usable. (An RTM_NEWNEIGH with NTF_USE is acknowledged by
this 6.18 kernel but creates no entry, so it cannot be the trigger.) The
zero-length datagram reaches the destination after resolution; its port
unreachable answer goes to us, never to the peer.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT

RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_ROUTE = 0x40
DISCARD_PORT = 9
_POLL_S = 0.02
_LISTEN_TICK_S = 0.2


class ResolutionError(OSError):
    """The next hop did not resolve in time (no route, or no ARP reply)."""


@dataclass(frozen=True)
class NextHop:
    """Where the FIB sends a destination: the neighbour to address and the interface."""

    dst: str
    address: str
    ifindex: int
    gateway: bool
    source: str | None


def mac_from_text(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def usable(state: int) -> bool:
    """Whether a neighbour state carries a link-layer address we may send to."""
    return bool(state & NUD_USABLE)


class NeighbourCache:
    """Per-destination next-hop MAC cache backed by rtnetlink, with a listener thread."""

    def __init__(self, resolve_timeout: float = 2.0, listen: bool = True) -> None:
        self.resolve_timeout = resolve_timeout
        self._ipr = IPRoute()
        self._lock = threading.Condition()
        self._hops: dict[str, NextHop] = {}
        self._macs: dict[str, bytes] = {}
        self.counters = {"hits": 0, "misses": 0, "resolutions": 0, "updates": 0, "removals": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        if listen:
            self._start_listener()

    def lookup(self, dst: str) -> bytes:
        """The MAC to put in frames for dst; resolves through the kernel on a miss."""
        with self._lock:
            mac = self._macs.get(dst)
            if mac is not None:
                self.counters["hits"] += 1
                return mac
            self.counters["misses"] += 1
        hop = self.next_hop(dst)
        mac = self._neighbour(hop) or self._resolve(hop)
        with self._lock:
            self._hops[dst] = hop
            self._macs[dst] = mac
        return mac

    def next_hop(self, dst: str) -> NextHop:
        """FIB lookup (RTM_GETROUTE): the gateway if the route has one, else dst itself."""
        try:
            (route,) = self._ipr.route("get", dst=dst)[:1]
        except Exception as exc:
            raise ResolutionError(f"no route to {dst}: {exc}") from exc
        gateway = route.get_attr("RTA_GATEWAY")
        return NextHop(
            dst=dst,
            address=gateway or dst,
            ifindex=int(route.get_attr("RTA_OIF")),
            gateway=gateway is not None,
            source=route.get_attr("RTA_PREFSRC"),
        )

    def invalidate(self, dst: str | None = None) -> None:
        """Forget one destination, or all of them."""
        with self._lock:
            if dst is None:
                self._hops.clear()
                self._macs.clear()
            else:
                self._hops.pop(dst, None)
                self._macs.pop(dst, None)

    def _neighbour(self, hop: NextHop) -> bytes | None:
        """The usable neighbour entry of a next hop, straight from the table."""
        for entry in self._ipr.get_neighbours(dst=hop.address, ifindex=hop.ifindex):
            lladdr = entry.get_attr("NDA_LLADDR")
            if lladdr and usable(entry["state"]):
                return mac_from_text(lladdr)
        return None

    def _resolve(self, hop: NextHop) -> bytes:
        """Make the kernel ARP for the next hop and wait (bounded) for a usable entry."""
        self.counters["resolutions"] += 1
        trigger_resolution(hop)
        deadline = time.monotonic() + self.resolve_timeout
        while time.monotonic() < deadline:
            mac = self._neighbour(hop)
            if mac is not None:
                return mac
            with self._lock:
                self._lock.wait(_POLL_S)
        raise ResolutionError(
            f"{hop.address} (next hop of {hop.dst}) unresolved after {self.resolve_timeout} s"
        )

    def _start_listener(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE))
        self._listener = sock
        self._thread = threading.Thread(target=self._listen, name="neighbours", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        """Apply rtnetlink events until close(); wakes at least every tick to check."""
        assert self._listener is not None
        marshal = MarshalRtnl()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], _LISTEN_TICK_S)
            if not ready:
                continue
            try:
                data = self._listener.recv(1 << 16)
            except OSError:
                continue
            for message in marshal.parse(data):
                self.apply(message)

    def apply(self, message: Any) -> None:
        """Update the cache from one rtnetlink message (public for tests and replays)."""
        event = message.get("event")
        if event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            self.invalidate()
            return
        if event not in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
            return
        address, ifindex = message.get_attr("NDA_DST"), message.get("ifindex")
        lladdr = message.get_attr("NDA_LLADDR")
        alive = event == "RTM_NEWNEIGH" and lladdr and usable(message.get("state", 0))
        with self._lock:
            for dst, hop in self._hops.items():
                if hop.address != address or hop.ifindex != ifindex:
                    continue
                if alive:
                    self._macs[dst] = mac_from_text(lladdr)
                    self.counters["updates"] += 1
                elif self._macs.pop(dst, None) is not None:
                    self.counters["removals"] += 1
            self._lock.notify_all()

    def close(self) -> None:
        """Stop the listener and close the netlink sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _LISTEN_TICK_S + 1)
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(Exception):
            self._ipr.close()

    def __enter__(self) -> NeighbourCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def trigger_resolution(hop: NextHop) -> None:
    """Queue a zero-length UDP datagram to the next hop's discard port: the kernel ARPs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((hop.address, DISCARD_PORT))
        with contextlib.suppress(OSError):
            sock.send(b"")
