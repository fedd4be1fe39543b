"""The hook catalogue: stage boundaries, each a list of candidate hooks.

Candidates are in preference order (fentry, kprobe, tp_btf, raw_tp,
tracepoint); the loader keeps, per boundary, the first that loads and
attaches on the running kernel. Stages are spans between two boundaries, so a
boundary nobody could hook makes both stages around it unobservable.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("fentry", "kprobe", "tp_btf", "raw_tp", "tracepoint")


@dataclass(frozen=True)
class Candidate:
    """One way to hook a boundary: an attach kind and the BPF programs it needs."""

    kind: str
    target: str
    programs: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.target}"


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


def _syscalls(*names: str) -> tuple[Candidate, ...]:
    return (
        Candidate(
            "tracepoint",
            "syscalls/" + ",".join(f"sys_enter_{n}" for n in names),
            tuple(f"tp_sys_enter_{n}" for n in names),
        ),
    )


BOUNDARIES: tuple[Boundary, ...] = (
    Boundary("send_enter", "send syscall entry", _syscalls("sendto", "sendmsg", "sendmmsg"), True),
    Boundary(
        "dev_queue", "first fragment queued to the device", _btf_family("net_dev_queue"), True
    ),
    Boundary(
        "dev_xmit", "driver transmit of the first fragment", _btf_family("net_dev_start_xmit")
    ),
    Boundary("dev_rx", "device receive of the first fragment", _btf_family("netif_rx")),
    Boundary("stack_rx", "stack entry of each fragment", _btf_family("netif_receive_skb")),
    Boundary("sk_enqueue", "socket enqueue", _btf_family("sk_data_ready"), True),
    Boundary("recv_enter", "receive syscall entry", _syscalls("recvfrom", "recvmsg", "recvmmsg")),
    Boundary("recv_return", "receive returns the datagram", _btf_family("sock_recv_length"), True),
)

BY_NAME = {b.name: b for b in BOUNDARIES}

# Each stage spans from the first boundary to the second.
STAGE_SPANS: dict[str, tuple[str, str]] = {
    "total": ("send_enter", "recv_return"),
    "send": ("send_enter", "dev_queue"),
    "qdisc": ("dev_queue", "dev_xmit"),
    "driver": ("dev_xmit", "dev_rx"),
    "backlog": ("dev_rx", "stack_rx"),
    "frag_train": ("stack_rx", "stack_rx"),
    "ip_udp": ("stack_rx", "sk_enqueue"),
    "sock_wait": ("sk_enqueue", "recv_enter"),
    "recv": ("recv_enter", "recv_return"),
}

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
}


def unobserved_stages(chosen: dict[str, Candidate | None]) -> list[str]:
    """Stages with a boundary no hook could serve."""
    return [
        stage
        for stage, (start, end) in STAGE_SPANS.items()
        if chosen.get(start) is None or chosen.get(end) is None
    ]
