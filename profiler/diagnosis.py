"""What doctor finds, as data: the attach kinds it proves, the hook points, the receive
tracepoints and which of them fired in its self-test, the checks.

Filled by :mod:`profiler.doctor` (which loads BPF to prove things) and read
by :mod:`profiler.views.doctor` (which draws it) and ``--json`` (``as_json``):
plain data, so that the view never needs what collects it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PROBE_OBJECT_NAME = "probe.bpf.o"


@dataclass(frozen=True)
class Probe:
    """One attach kind, the probe program that proves it, and how far the proof goes."""

    kind: str
    program: str
    proof: str  # "attach": a link; "socket": a throwaway socket; "tc"/"xdp": a throwaway netns
    fix: str


PROBES: tuple[Probe, ...] = (
    Probe(
        "fentry",
        "probe_fentry",
        "attach",
        "needs BPF trampolines (CONFIG_BPF_JIT, CONFIG_DEBUG_INFO_BTF; any distribution "
        "kernel on x86-64/arm64); kprobes are the fallback for function hooks",
    ),
    Probe("fexit", "probe_fexit", "attach", "as fentry: needs BPF trampolines"),
    Probe(
        "kprobe",
        "probe_kprobe",
        "attach",
        "needs CONFIG_KPROBES=y (any distribution kernel); without it and without fentry, "
        "the stages inside IP and UDP fall back to tracepoints",
    ),
    Probe("kretprobe", "probe_kretprobe", "attach", "as kprobe: needs CONFIG_KPROBES=y"),
    Probe("tp_btf", "probe_tp_btf", "attach", "needs BTF (CONFIG_DEBUG_INFO_BTF=y)"),
    Probe("raw_tp", "probe_raw_tp", "attach", "needs CONFIG_BPF_EVENTS=y"),
    Probe(
        "tracepoint",
        "probe_tracepoint",
        "attach",
        "needs CONFIG_BPF_EVENTS=y and tracefs: mount -t tracefs nodev /sys/kernel/tracing",
    ),
    Probe("socket_filter", "probe_socket", "socket", "needs CONFIG_BPF_SYSCALL=y"),
    Probe("tc", "probe_tc", "tc", "needs CONFIG_NET_CLS_BPF and CONFIG_NET_SCH_INGRESS"),
    Probe("xdp", "probe_xdp", "xdp", "needs XDP support (CONFIG_BPF_SYSCALL, CONFIG_NET)"),
)


@dataclass
class KindResult:
    """Whether an attach kind works here, and the kernel's reason when it does not."""

    kind: str
    works: bool
    proof: str
    error: str | None = None


@dataclass
class Check:
    """A feature or setting: ok, missing (with what to do), or info (behaviour to know)."""

    name: str
    status: str  # "ok" | "missing" | "info"
    detail: str
    fix: str | None = None


@dataclass
class HookPoint:
    """One boundary of the catalogue and the hook the loader chose for it."""

    name: str
    what: str
    required: bool
    hook: str | None
    kind: str | None
    refused: list[str]
    symbols: dict[str, str | None] = field(default_factory=dict)


@dataclass
class ReceiveHook:
    """A receive-path tracepoint: whether this kernel has it and which attach kind loads."""

    name: str
    boundary: str  # the hook point it serves (dev_rx, stack_rx)
    exists: bool | None  # in tracefs events/net; None: could not tell (not root)
    kind: str | None  # the attach kind that loads and attaches for it; None: none did
    refused: list[str] = field(default_factory=list)  # the kinds tried before, or why none


@dataclass
class RxSelfTest:
    """One receive mode of doctor's self-test: UDP datagrams sent between two throwaway
    namespaces over veth, and each receive tracepoint's events on the receiving device."""

    mode: str  # "backlog" (veth's netif_rx) or "napi" (GRO on: NAPI, as a NIC driver)
    datagrams: int  # sent (payload bytes each, fragmented at mtu)
    payload: int
    mtu: int
    received: int = 0
    fired: dict[str, int] = field(default_factory=dict)  # tracepoint -> events
    skipped: str | None = None  # why it did not run
    error: str | None = None  # why it stopped

    @property
    def fragments(self) -> int:
        """IP packets per datagram: the UDP header and payload cut at MTU less the IP header."""
        per_packet = (self.mtu - 20) // 8 * 8
        return -(-(self.payload + 8) // per_packet)

    @property
    def ran(self) -> bool:
        return self.skipped is None and self.error is None

    def fired_names(self) -> list[str]:
        return [name for name, n in self.fired.items() if n]


@dataclass
class Diagnosis:
    """Everything doctor found; ``as_json`` is the --json document."""

    kernel: str
    root: bool
    attach: list[KindResult]
    hooks: list[HookPoint]
    unobserved: list[str]
    missing_required: list[str]
    checks: list[Check]
    probe_object: str = PROBE_OBJECT_NAME  # the file the attach kinds were proved with
    receive_hooks: list[ReceiveHook] = field(default_factory=list)
    rx_selftest: list[RxSelfTest] = field(default_factory=list)

    @property
    def core_trace_ok(self) -> bool:
        return not self.missing_required

    def as_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "root": self.root,
            "core_trace_ok": self.core_trace_ok,
            "attach": {r.kind: asdict(r) for r in self.attach},
            "hooks": {h.name: asdict(h) for h in self.hooks},
            "unobserved": self.unobserved,
            "missing_required": self.missing_required,
            "checks": {c.name: asdict(c) for c in self.checks},
            "receive_hooks": {h.name: asdict(h) for h in self.receive_hooks},
            "rx_selftest": {
                t.mode: {**asdict(t), "fragments": t.fragments, "fired_names": t.fired_names()}
                for t in self.rx_selftest
            },
        }
