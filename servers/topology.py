"""Two network namespaces joined by one veth pair: the hosts of the reference workload.

Every name carries the owner's pid (``sp<pid>-cli``, ``sp<pid>-srv``, veth
``sp<pid>c``/``sp<pid>s``) so that what a crashed run left behind can be told
apart from what a live run is using, and removed by :func:`remove_leftovers`.
The veth is created inside the client namespace with its peer in the server
namespace: it never exists in the root namespace, and it disappears with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from pyroute2 import IPRoute, config, netns

MTU_MIN = 68
MTU_MAX = 65535
NETNS_DIR = Path("/run/netns")
OWNERS_DIR = Path("/run/stackprof")
PREFIX = "sp"
_NS_RE = re.compile(rf"^{PREFIX}(\d+)-(cli|srv)$")
_VETH_RE = re.compile(rf"^{PREFIX}(\d+)[cs]$")
_CLONE_NEWNET = 0x40000000
RX_MODES = ("backlog", "napi")
# What rx="napi" asks of each veth end (`ethtool -K`), and what `ethtool -k` must then show.
NAPI_ETHTOOL = ("gro", "on", "tso", "off")
NAPI_FEATURES = {"generic-receive-offload": "on", "tcp-segmentation-offload": "off"}
# pyroute2 creates a namespace in a forked helper and gives up on it after 2 s; under
# emulation (the guest tests) a busy kernel can take longer to answer.
config.default_communicate_timeout = max(config.default_communicate_timeout, 30)


class NetnsInodes(NamedTuple):
    """The kernel's net->ns.inum of each namespace, what BPF programs can filter on."""

    client: int
    server: int


def check_mtu(mtu: int) -> int:
    """Return mtu if veth accepts it, else ValueError (one line, says the range)."""
    if not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX:
        raise ValueError(f"MTU must be an integer in {MTU_MIN}..{MTU_MAX}, got {mtu!r}")
    return mtu


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def run_in_netns(name: str, func: Callable[[], None]) -> None:
    """Run func in a short-lived thread that entered namespace name.

    setns(CLONE_NEWNET) moves only the calling thread, so the caller's own
    namespace never changes, whatever func does.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name} failed")
            finally:
                os.close(fd)
            func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _disable_ipv6() -> None:
    """No link-local address, so no DAD, MLD or router solicitations pollute a trace."""
    for conf in ("all", "default"):
        Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1")


def _processes_in(inode: int, dev: int) -> Iterator[int]:
    """Pids whose network namespace is (dev, inode)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry.name}/ns/net")
            if (st.st_ino, st.st_dev) == (inode, dev):
                yield int(entry.name)


def _kill_processes_in(name: str) -> None:
    """SIGKILL whatever still runs in namespace name (it would keep it alive)."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(NETNS_DIR / name)
        for pid in _processes_in(st.st_ino, st.st_dev):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _remove_netns(name: str) -> bool:
    """Kill its processes and remove namespace name; False if it was not there."""
    _owner_file(name).unlink(missing_ok=True)
    if not (NETNS_DIR / name).exists():
        return False
    _kill_processes_in(name)
    try:
        netns.remove(name)
    except FileNotFoundError:
        return False
    return True


def _start_ticks(pid: int) -> int | None:
    """When pid started, in clock ticks since boot (immune to wall-clock steps), or
    None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_file(name: str) -> Path:
    return OWNERS_DIR / f"{name}.owner"


def _record_owner(name: str) -> None:
    """Note this process's start time beside a namespace, to tell pid reuse apart."""
    OWNERS_DIR.mkdir(parents=True, exist_ok=True)
    _owner_file(name).write_text(str(_start_ticks(os.getpid())))


def _owner_alive(name: str, pid: int) -> bool:
    """Whether the process that made namespace name still runs (same pid, same start)."""
    started = _start_ticks(pid)
    if started is None:
        return False
    try:
        recorded = int(_owner_file(name).read_text())
    except (OSError, ValueError):
        return True
    return started == recorded


def _stale_namespaces() -> list[str]:
    stale = []
    for name in sorted(netns.listnetns()):
        match = _NS_RE.match(name)
        if match and not _owner_alive(name, int(match[1])):
            stale.append(name)
    return stale


def _remove_stale_root_veths() -> list[str]:
    """Veths of ours in the root namespace (only if creation was interrupted oddly)."""
    removed = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            match = _VETH_RE.match(name)
            if match and _start_ticks(int(match[1])) is None:
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
                    removed.append(name)
    return removed


def remove_leftovers() -> list[str]:
    """Remove namespaces and veths of runs whose owner process is gone; return their names.

    Processes still running inside such a namespace are SIGKILLed first.
    Idempotent: a second call finds nothing and returns [].
    """
    removed = [name for name in _stale_namespaces() if _remove_netns(name)]
    return removed + _remove_stale_root_veths()


def check_rx(rx: str) -> str:
    """Return rx if it is a receive mode of :class:`Topology`, else ValueError."""
    if rx not in RX_MODES:
        raise ValueError(f"rx must be one of {', '.join(RX_MODES)}, got {rx!r}")
    return rx


def _ethtool_features(ifname: str) -> dict[str, str]:
    """`ethtool -k ifname` as {feature: "on"|"off"} (run in the caller's namespace)."""
    out = subprocess.run(
        ["ethtool", "-k", ifname], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    pairs = (line.strip().split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    return {name: value.split()[0] for name, value in pairs if value.split()}


def _napi_receive(ifname: str) -> None:
    """GRO on and TSO off on ifname, read back (run inside its namespace)."""
    try:
        subprocess.run(
            ["ethtool", "-K", ifname, *NAPI_ETHTOOL], check=True, capture_output=True, timeout=10
        )
    except FileNotFoundError as exc:
        raise RuntimeError("rx='napi' needs ethtool (setup.sh installs it)") from exc
    got = _ethtool_features(ifname)
    wrong = {k: got.get(k) for k, v in NAPI_FEATURES.items() if got.get(k) != v}
    if wrong:
        raise RuntimeError(f"{ifname}: ethtool -K {' '.join(NAPI_ETHTOOL)} left {wrong}")


class Topology:
    """Client and server namespaces joined by one veth pair of the given MTU.

    Use as a context manager; ``__exit__`` removes everything created, also
    after a failure halfway through ``__enter__``.

    ``rx`` is how each veth end receives. ``"backlog"`` (veth's default, GRO off):
    veth_xmit hands every skb to netif_rx, so the receive side is net:netif_rx_entry,
    net:netif_rx and, from the per-CPU backlog's NAPI poll, net:netif_receive_skb;
    no NIC driver looks like that. ``"napi"``: ``ethtool -K <veth> gro on tso off`` on
    both ends (both receive: requests one way, responses the other). GRO on gives the
    receiving end its NAPI ring (veth_napi_enable); TSO off on the sending end makes
    every skb eligible for it (veth_skb_is_eligible_for_gro: with TSO on only skbs
    whose destructor is sock_wfree qualify, and only if the receiver has rx-gro-list
    or rx-udp-gro-forwarding). veth_xmit then queues the skb on the peer's ring and
    the peer's NAPI poll calls napi_gro_receive, as a NIC driver does. Measured on
    6.18 with 8 KiB UDP datagrams, ping-pong and bursts, both directions, counted per
    receiving device in tracefs: per IP packet (6 fragments of 1500, 1500, 1500,
    1500, 1500, 820 bytes at MTU 1500; one of 8220 at MTU 9000) one
    net:napi_gro_receive_entry and then one net:netif_receive_skb; no netif_rx,
    netif_rx_entry, netif_receive_skb_entry, netif_receive_skb_list_entry or
    napi_gro_frags_entry. GRO merges nothing here: inet_gro_receive never holds IP
    fragments (they are reassembled later, in ip_local_deliver), and UDP datagrams
    are merged only for a socket with UDP_GRO and only when several wait in the ring
    at one poll: not seen even in bursts of 50 (the peer's NAPI seems to run as each
    xmit re-enables BH). A UDP_SEGMENT sender's GSO skb crosses veth whole: one event
    for all its segments. (``gro on rx-udp-gro-forwarding on`` with TSO on also took
    NAPI for plain UDP sockets here, but hangs on the sender's skb destructor; an XDP
    program would make the ring, not the skbs eligible.) Nothing to undo: the veth
    goes with the namespaces.
    """

    def __init__(self, mtu: int = 1500, rx: str = "backlog") -> None:
        self.mtu = check_mtu(mtu)
        self.rx = check_rx(rx)
        pid = os.getpid()
        subnet = pid % 256
        self.client_ns = f"{PREFIX}{pid}-cli"
        self.server_ns = f"{PREFIX}{pid}-srv"
        self.client_if = f"{PREFIX}{pid}c"
        self.server_if = f"{PREFIX}{pid}s"
        self.client_ip = f"10.213.{subnet}.1"
        self.server_ip = f"10.213.{subnet}.2"
        self.prefixlen = 30
        self._created: list[str] = []
        self._owner = pid

    def __enter__(self) -> Topology:
        remove_leftovers()
        for name in (self.client_ns, self.server_ns):
            if (NETNS_DIR / name).exists():
                raise RuntimeError(f"namespace {name} exists: one Topology per process at a time")
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        for name in (self.client_ns, self.server_ns):
            self._created.append(name)
            _record_owner(name)
            netns.create(name)
            run_in_netns(name, _disable_ipv6)
        with IPRoute(netns=self.client_ns) as ipr:
            ipr.link(
                "add",
                ifname=self.client_if,
                kind="veth",
                peer={"ifname": self.server_if, "net_ns_fd": self.server_ns},
            )
        self._configure(self.client_ns, self.client_if, self.client_ip)
        self._configure(self.server_ns, self.server_if, self.server_ip)
        if self.rx == "napi":
            run_in_netns(self.client_ns, lambda: _napi_receive(self.client_if))
            run_in_netns(self.server_ns, lambda: _napi_receive(self.server_if))
        self.wait_link_up()

    def _configure(self, ns: str, ifname: str, address: str) -> None:
        """lo up; veth end with MTU and address, up; MTU read back to be sure."""
        with IPRoute(netns=ns) as ipr:
            (lo,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=lo, state="up")
            (index,) = ipr.link_lookup(ifname=ifname)
            ipr.link("set", index=index, mtu=self.mtu)
            ipr.addr("add", index=index, address=address, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")
            got = ipr.get_links(index)[0].get_attr("IFLA_MTU")
        if got != self.mtu:
            raise RuntimeError(f"{ifname} in {ns}: MTU is {got}, wanted {self.mtu}")

    def close(self) -> None:
        """Remove the namespaces made (veth goes with them); safe to call twice.
        Only the process that made them does: a forked child unwinding a copy of
        the stack must leave them alone."""
        if os.getpid() != self._owner:
            return
        while self._created:
            _remove_netns(self._created.pop())

    def netns_inodes(self) -> NetnsInodes:
        """Inode numbers of the namespaces (== net->ns.inum in the kernel)."""
        return NetnsInodes(
            client=os.stat(NETNS_DIR / self.client_ns).st_ino,
            server=os.stat(NETNS_DIR / self.server_ns).st_ino,
        )

    def wait_link_up(self, timeout: float = 2.0) -> None:
        """Block until both veth ends report carrier (veth needs both ends up)."""
        deadline = time.monotonic() + timeout
        for ns, ifname in ((self.client_ns, self.client_if), (self.server_ns, self.server_if)):
            with IPRoute(netns=ns) as ipr:
                while ipr.get_links(ifname=ifname)[0].get_attr("IFLA_OPERSTATE") != "UP":
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{ifname} in {ns} not up after {timeout} s")
                    time.sleep(0.01)
