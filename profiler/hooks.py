"""The hook catalogue: stage boundaries, each a list of candidate hooks.

Candidates are in preference order (fentry, kprobe, tp_btf, raw_tp,
tracepoint); the loader keeps, per boundary, the first that loads and
attaches on the running kernel. Stages are spans between two boundaries, so a
boundary nobody could hook makes both stages around it unobservable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("fentry", "kprobe", "tp_btf", "raw_tp", "tracepoint")
RING_WAITS = ("poll", "ppoll", "epoll_wait")


@dataclass(frozen=True)
class Candidate:
    """One way to hook a boundary: an attach kind and the BPF programs it needs."""

    kind: str
    target: str
    programs: tuple[str, ...]
    functions: tuple[str, ...] = ()  # kprobes: the kernel function of each program
    variant: str = ""  # what sets its programs apart from another candidate's on the hook

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.target}" + (f" ({self.variant})" if self.variant else "")


@dataclass(frozen=True)
class Boundary:
    """A moment in a datagram's life that some hook can timestamp."""

    name: str
    what: str
    candidates: tuple[Candidate, ...]
    required: bool = False


def _btf_family(target: str) -> tuple[Candidate, ...]:
    return (
        Candidate("tp_btf", target, (f"tp_btf_{target}",)),
        Candidate("raw_tp", target, (f"raw_tp_{target}",)),
    )


def _cast(target: str) -> tuple[Candidate, ...]:
    """The tp_btf program that reads packet headers and udp_sock fields with plain loads
    through bpf_rdonly_cast (6.2 and later), where the plain one calls a helper per read."""
    return (Candidate("tp_btf", target, (f"tp_btf_cast_{target}",), variant="rdonly_cast"),)


# Device-receive tracepoints: netif_rx (veth, loopback, drivers without NAPI) and
# the entries of NAPI drivers and GRO. A host has several kinds of device at once:
# all are hooked together, and the first to fire for a datagram stamps it.
DEVICE_RECEIVES = (
    "netif_rx",
    "napi_gro_receive_entry",
    "napi_gro_frags_entry",
    "netif_receive_skb_entry",
    "netif_receive_skb_list_entry",
)


def _btf_together(*targets: str) -> tuple[Candidate, ...]:
    """Several tracepoints hooked as one (tp_btf, else raw_tp)."""
    return tuple(
        Candidate(kind, ",".join(targets), tuple(f"{kind}_{t}" for t in targets))
        for kind in ("tp_btf", "raw_tp")
    )


def _syscalls(*names: str, when: str = "enter") -> tuple[Candidate, ...]:
    return (
        Candidate(
            "tracepoint",
            "syscalls/" + ",".join(f"sys_{when}_{n}" for n in names),
            tuple(f"tp_sys_{when}_{n}" for n in names),
        ),
    )


def _fine(function: str, name: str = "", ret: bool = False) -> tuple[Candidate, ...]:
    """fentry (or fexit when ret) on a kernel function, then kprobe (+ kretprobe)."""
    name = name or function
    if ret:
        return (
            Candidate("fentry", f"fexit/{function}", (f"fexit_{name}",)),
            Candidate("kprobe", function, (f"kprobe_{name}", f"kretprobe_{name}"), (function,) * 2),
        )
    return (
        Candidate("fentry", f"fentry/{function}", (f"fentry_{name}",)),
        Candidate("kprobe", function, (f"kprobe_{name}",), (function,)),
    )


def _fine_each(*functions: str, ret: bool = False) -> tuple[Candidate, ...]:
    """fentry (fexit when ret) on each of several functions, then kprobes (+ kretprobes)."""
    entry = "fexit" if ret else "fentry"
    probes = ("kprobe", "kretprobe") if ret else ("kprobe",)
    return (
        Candidate(
            "fentry",
            ",".join(f"{entry}/{f}" for f in functions),
            tuple(f"{entry}_{f}" for f in functions),
        ),
        Candidate(
            "kprobe",
            ",".join(functions),
            tuple(f"{probe}_{f}" for f in functions for probe in probes),
            tuple(f for f in functions for _ in probes),
        ),
    )


BOUNDARIES: tuple[Boundary, ...] = (
    Boundary("send_enter", "send syscall entry", _syscalls("sendto", "sendmsg", "sendmmsg"), True),
    Boundary(
        "dev_queue",
        "first fragment queued to the device",
        _cast("net_dev_queue") + _btf_family("net_dev_queue"),
        True,
    ),
    Boundary(
        "dev_xmit", "driver transmit of the first fragment", _btf_family("net_dev_start_xmit")
    ),
    Boundary(
        "dev_rx",
        "device receive of the first fragment (netif_rx, or a NAPI/GRO entry)",
        _btf_together(*DEVICE_RECEIVES) + _btf_family("netif_rx"),
    ),
    Boundary("stack_rx", "stack entry of each fragment", _btf_family("netif_receive_skb")),
    Boundary(
        "sk_enqueue",
        "socket enqueue (data ready)",
        _fine("sock_def_readable") + _cast("sk_data_ready") + _btf_family("sk_data_ready"),
        True,
    ),
    Boundary("recv_enter", "receive syscall entry", _syscalls("recvfrom", "recvmsg", "recvmmsg")),
    Boundary(
        "recv_return",
        "receive returns the datagram",
        _fine_each("udp_recvmsg", "tcp_recvmsg", ret=True)
        + _cast("sock_recv_length")
        + _btf_family("sock_recv_length"),
        True,
    ),
    Boundary("frag_tx", "the send enters ip_do_fragment", _fine("ip_do_fragment")),
    Boundary(
        "neigh_out",
        "its first packet enters ip_finish_output2 (neighbour output)",
        _fine("ip_finish_output2"),
    ),
    Boundary("ip_in", "IP receive entry (ip_rcv) of the completing packet", _fine("ip_rcv")),
    Boundary(
        "local_in",
        "local delivery entry (ip_local_deliver): routed to this host",
        _fine("ip_local_deliver"),
    ),
    Boundary(
        "defrag_done",
        "ip_defrag entry and return of the whole datagram",
        (
            Candidate("fentry", "fentry+fexit/ip_defrag", ("fentry_ip_defrag", "fexit_ip_defrag")),
            *_fine("ip_defrag", ret=True)[1:],
        ),
    ),
    Boundary("udp_rcv", "UDP receive entry (udp_rcv)", _fine("udp_rcv")),
    Boundary(
        "udp_enqueue",
        "socket enqueue returns (drops counted)",
        _fine("__udp_enqueue_schedule_skb", "udp_enqueue", ret=True),
    ),
    Boundary("pkt_rcv", "packet socket delivery", _fine_each("tpacket_rcv", "packet_rcv")),
    Boundary("ring_wake", "a ring receiver returns from poll", _syscalls(*RING_WAITS, when="exit")),
    Boundary(
        "drop",
        "a packet freed as dropped, with the kernel's reason (skb:kfree_skb)",
        (
            *_btf_family("kfree_skb"),
            Candidate("tracepoint", "skb/kfree_skb", ("tp_skb_kfree_skb",)),
        ),
    ),
    Boundary("recvmmsg_ret", "recvmmsg returns its batch", _syscalls("recvmmsg", when="exit")),
)

BY_NAME = {b.name: b for b in BOUNDARIES}
FUNCTION_KINDS = frozenset({"fentry", "fexit", "kprobe", "kretprobe"})


def functions_of(candidates: Iterable[Candidate]) -> list[str]:
    """Kernel functions named by function-hook candidates ("fexit/ip_defrag,..." or "udp_rcv")."""
    names: list[str] = []
    for c in candidates:
        if c.kind in FUNCTION_KINDS:
            names += [t.rsplit("/", 1)[-1] for t in c.target.split(",") if t]
    return list(dict.fromkeys(names))


# Every kernel function the catalogue hooks: what kallsyms is read for (kallsyms.resolve).
FUNCTIONS = frozenset(functions_of(c for b in BOUNDARIES for c in b.candidates))

# Each stage spans from the first boundary to the second.
STAGE_SPANS: dict[str, tuple[str, str]] = {
    "total": ("send_enter", "recv_return"),
    "send": ("send_enter", "dev_queue"),
    "qdisc": ("dev_queue", "dev_xmit"),
    "tx_frags": ("dev_queue", "dev_xmit"),
    "driver": ("dev_xmit", "dev_rx"),
    "backlog": ("dev_rx", "stack_rx"),
    "frag_train": ("stack_rx", "stack_rx"),
    "ip_udp": ("stack_rx", "sk_enqueue"),
    "sock_wait": ("sk_enqueue", "recv_enter"),
    "recv": ("recv_enter", "recv_return"),
    "udp_ip_tx": ("send_enter", "neigh_out"),
    "fragment": ("frag_tx", "neigh_out"),
    "neigh_tx": ("neigh_out", "dev_queue"),
    "ip_rcv": ("stack_rx", "ip_in"),
    "ip_route": ("ip_in", "local_in"),
    "ip_rx": ("stack_rx", "defrag_done"),
    "reassembly": ("defrag_done", "defrag_done"),
    "ip_local": ("stack_rx", "udp_rcv"),
    "udp_rcv": ("udp_rcv", "sk_enqueue"),
    "pkt_deliver": ("stack_rx", "pkt_rcv"),
    "ring_wait": ("stack_rx", "ring_wake"),
    "to_stack": ("dev_queue", "stack_rx"),
    "sock_recv": ("sk_enqueue", "recv_return"),
}

# Finer stages split a coarse one (they add up to it); views indent them and
# leave them out of the shares of the time.
PARENT: dict[str, str] = {
    "udp_ip_tx": "send",
    "fragment": "send",
    "neigh_tx": "send",
    "ip_rcv": "ip_udp",
    "ip_route": "ip_udp",
    "ip_rx": "ip_udp",
    "reassembly": "ip_udp",
    "ip_local": "ip_udp",
    "udp_rcv": "ip_udp",
}

# Stages only receivers on a PF_PACKET ring have (they replace ip_udp, sock_wait
# and recv on the request path).
RING_STAGES = ("pkt_deliver", "ring_wait")
RING_TRANSPORTS = {"packet-v2": "frames", "packet-v3": "blocks"}

STAGE_HELP: dict[str, str] = {
    "total": "send syscall -> receive syscall returns",
    "send": "send syscall -> first fragment queued to the device",
    "qdisc": "first fragment queued -> driver transmit",
    "driver": "driver transmit -> device receive",
    "backlog": "device receive -> stack entry (netif_receive_skb)",
    "frag_train": "first -> last fragment at stack entry",
    "ip_udp": "last fragment at stack entry -> socket enqueue (reassembly, IP, UDP)",
    "sock_wait": "socket enqueue -> the receive call that takes it starts",
    "recv": "-> receive returns (wake-up, dequeue, copy)",
    "udp_ip_tx": "send syscall -> ip_do_fragment, or ip_finish_output2 (UDP, IP, routing)",
    "tcp_ip_tx": "send syscall -> ip_finish_output2 (TCP, IP, routing)",
    "fragment": "ip_do_fragment -> first fragment at ip_finish_output2 (fragmenting)",
    "neigh_tx": "ip_finish_output2 -> first packet queued to the device (neighbour, L2)",
    "ip_rcv": "last fragment at stack entry -> ip_rcv (device layer, packet taps)",
    "ip_route": "ip_rcv -> ip_local_deliver (IP checks, netfilter PREROUTING, routing)",
    "ip_rx": "ip_local_deliver (or stack entry) -> ip_defrag",
    "reassembly": "ip_defrag of the last fragment (the reassembly's CPU)",
    "ip_local": "whole datagram (or ip_local_deliver) -> udp_rcv (LOCAL_IN, protocol demux)",
    "udp_rcv": "udp_rcv -> socket enqueue (UDP lookup, checks, queueing)",
    "pkt_deliver": "last fragment at stack entry -> written to the packet ring",
    "ring_wait": "-> the receiver has seen it: poll returns, or (V2) its next send",
    "ip_tcp": "segment at stack entry -> socket enqueue (IP, TCP)",
    "tx_frags": "first fragment queued -> last fragment's driver transmit (receiver off the host)",
    "rx_stack": "first fragment's device receive -> socket enqueue (or ring delivery)",
    "app": "request's receive returns -> response's send syscall (the server's own work)",
    "tx_stack": "send syscall -> last fragment's driver transmit",
    "away": "request's last fragment out -> response's first in (wire and the other host)",
    "stream_wait": "socket enqueue -> the receive call that copies its last byte starts",
    "to_stack": "first fragment queued -> its stack entry (qdisc, driver, backlog)",
    "sock_recv": "socket enqueue -> receive returns (sock_wait, recv)",
    "stream_recv": "socket enqueue -> the read that copies its last byte returns",
}

# --detail lean hooks only the boundaries that carry most of the time (a ring receiver's
# end of a request too); each stage across one it leaves unhooked is merged into one of
# LEAN_MERGED, which only lean runs have (BPF records them under cfg.lean).
DETAILS = ("full", "lean")
LEAN_BOUNDARIES = ("send_enter", "dev_queue", "stack_rx", "sk_enqueue", "recv_return")
LEAN_MERGED: dict[str, tuple[str, ...]] = {
    "to_stack": ("qdisc", "driver", "backlog"),
    "sock_recv": ("sock_wait", "recv"),
}
LEAN_STAGES = ("total", "send", "to_stack", "frag_train", "ip_udp", "sock_recv")
RING_BOUNDARIES = ("pkt_rcv", "ring_wake")


# What a byte stream has no use for: fragments (TCP segments are never IP
# fragments) and the UDP receive functions.
UDP_ONLY_STAGES = (
    "frag_train",
    "fragment",
    "ip_rx",
    "reassembly",
    "ip_local",
    "udp_rcv",
)
UDP_ONLY_BOUNDARIES = ("frag_tx", "defrag_done", "udp_rcv", "udp_enqueue")

# Stage names as a stream reads them (the data keeps the stable names).
STREAM_LABELS = {
    "udp_ip_tx": "tcp_ip_tx",
    "ip_udp": "ip_tcp",
    "sock_wait": "stream_wait",
    "sock_recv": "stream_recv",
}


# Transports whose packets are never IP fragments nor UDP (a byte stream, or RDS on it).
STREAM_TRANSPORTS = ("tcp", "rds")

# Transports whose messages the probes cannot follow, and why (their runs are
# measured by their clients and server only).
UNTRACED = {
    "rds": "RDS messages ride the kernel's own RDS-TCP connection (port 16385), several to "
    "a segment, read in softirq by RDS itself: no datagram or segment of the service port "
    "to follow, so an rds run is timed by its clients (RTT) and its server (CPU) only",
}


def unused_boundaries(transport: str, detail: str = "full") -> tuple[str, ...]:
    """Hook points that serve no stage of this transport (left unhooked); lean leaves
    every point but LEAN_BOUNDARIES (and a ring receiver's) unhooked too."""
    if transport in RING_TRANSPORTS:
        unused: tuple[str, ...] = ()
    elif transport == "attach":
        unused = RING_BOUNDARIES
    elif transport in STREAM_TRANSPORTS:
        unused = (*RING_BOUNDARIES, "recvmmsg_ret", *UDP_ONLY_BOUNDARIES)
    else:
        extra = () if transport == "udp-mmsg" else ("recvmmsg_ret",)
        unused = (*RING_BOUNDARIES, *extra)
    if detail != "lean":
        return unused
    keep = (*LEAN_BOUNDARIES, *(RING_BOUNDARIES if transport in RING_TRANSPORTS else ()))
    return (*unused, *(b.name for b in BOUNDARIES if b.name not in keep and b.name not in unused))


def stages_for(transport: str, detail: str = "full", one_sided: bool = False) -> tuple[str, ...]:
    """The stages a run of this transport (and detail) can have, finer ones after their
    parent; a lean run has only the coarse ones its hooks delimit (LEAN_STAGES);
    tx_frags only where datagrams may leave the traced host (one_sided)."""
    skip: tuple[str, ...] = () if transport in RING_TRANSPORTS else RING_STAGES
    if not one_sided or transport in STREAM_TRANSPORTS:
        skip += ("tx_frags",)
    if transport in STREAM_TRANSPORTS:
        skip += UDP_ONLY_STAGES
    if detail == "lean":
        return tuple(s for s in (*LEAN_STAGES, *RING_STAGES) if s not in skip)
    skip += tuple(LEAN_MERGED)
    order: list[str] = []
    for stage in STAGE_SPANS:
        if stage in PARENT or stage in skip:
            continue
        order.append(stage)
        order.extend(c for c, parent in PARENT.items() if parent == stage and c not in skip)
    return tuple(order)


def stage_name(stage: str, transport: object) -> str:
    """What a view calls the stage in a run of this transport."""
    return STREAM_LABELS.get(stage, stage) if transport == "tcp" else stage


def unobserved_stages(chosen: dict[str, Candidate | None]) -> list[str]:
    """Stages with a boundary no hook could serve."""
    return [
        stage
        for stage, (start, end) in STAGE_SPANS.items()
        if chosen.get(start) is None or chosen.get(end) is None
    ]


def run_stages(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The stages a run (its metadata) has, in display order; runs saved before
    the list was recorded get their transport's."""
    transport, detail = str(info.get("transport", "udp")), str(info.get("detail") or "full")
    return tuple(info.get("stages") or stages_for(transport, detail))


def listed_stages(info: Mapping[str, Any], every: Sequence[str]) -> list[str]:
    """Of every stage (the kernel's order), those a run's rows list: a lean run's own,
    else all but the merged stages only lean runs have."""
    if info.get("detail") == "lean":
        own = set(run_stages(info))
        return [s for s in every if s in own]
    return [s for s in every if s not in LEAN_MERGED]
