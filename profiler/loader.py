"""Loads stackprof's BPF object with one working hook per stage boundary.

Which hooks work is proved, not guessed: each candidate is loaded and
attached on its own (in a throw-away copy of the object) before the real
load keeps the winners. The proof is remembered per kernel and object
(profiler.hookcache); a remembered choice that no longer loads is re-proved.
"""

from __future__ import annotations

import ctypes
import errno
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from profiler import abi, hookcache, kallsyms, resources
from profiler.hooks import (
    BOUNDARIES,
    BY_NAME,
    FUNCTIONS,
    KINDS,
    STAGE_SPANS,
    Boundary,
    Candidate,
    unobserved_stages,
)
from profiler.libbpf import BPFError, BPFObject

OBJECT = resources.locate("stackprof.bpf.o")
TRACEFS = Path("/sys/kernel/tracing")
FINE_TX = ("frag_tx", "neigh_out")
# Hooks whose programs pass a socket on; where all are typed, its head of queue
# lives in the socket's own storage (a socket reached untyped is found by address).
SOCKET_HEADS = ("sk_enqueue", "recv_return")
TYPED_KINDS = ("fentry", "tp_btf")  # fexit programs count as fentry
SETTLE_S = 0.02  # a datagram crosses the stack in microseconds; its reader may take longer


def ensure_tracefs() -> None:
    """Classic tracepoints need tracefs (libbpf reads event ids there)."""
    if (TRACEFS / "events").is_dir():
        return
    subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False, capture_output=True
    )


class MissingFunction(BPFError):
    """A kprobe target the running kernel does not have."""


def kprobe_targets(candidate: Candidate) -> dict[str, str]:
    """Per kprobe program, the kernel symbol to probe (suffixed names resolved)."""
    targets: dict[str, str] = {}
    for program, function in zip(candidate.programs, candidate.functions, strict=False):
        symbol = kallsyms.resolve(function, FUNCTIONS)
        if symbol is None:
            raise MissingFunction(errno.ENOENT, f"{function} not in /proc/kallsyms")
        targets[program] = symbol
    return targets


def attach_candidate(obj: BPFObject, candidate: Candidate) -> None:
    """Attach a candidate's programs of a loaded obj (kprobes by resolved name)."""
    targets = kprobe_targets(candidate)
    for name in candidate.programs:
        obj.attach(name, targets.get(name))


def try_candidate(candidate: Candidate, path: Path = OBJECT) -> str | None:
    """None if the candidate loads and attaches here, else why not (one line)."""
    try:
        kprobe_targets(candidate)
        with BPFObject(path) as obj:
            obj.autoload_only(set(candidate.programs))
            obj.load()
            attach_candidate(obj, candidate)
    except BPFError as exc:
        return f"{exc.strerror}"
    return None


def try_together(choice: HookChoice, path: Path = OBJECT) -> str | None:
    """None if every chosen candidate loads in one object and its kprobe symbols are
    in this kernel, else why not. Not attached: detaching tracing links costs most of
    a second, and on the same kernel an attach that worked once works again (the
    Tracer re-proves a choice that does not)."""
    chosen = [c for c in choice.chosen.values() if c]
    try:
        for candidate in chosen:
            kprobe_targets(candidate)
        with BPFObject(path) as obj:
            obj.autoload_only({p for c in chosen for p in c.programs})
            obj.load()
    except BPFError as exc:
        return f"{exc.strerror}"
    return None


@dataclass
class HookChoice:
    """Per boundary, the candidate used (or None) and why the others failed."""

    chosen: dict[str, Candidate | None] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    cached: bool = False  # remembered from an earlier proof, checked by one load
    kinds: tuple[str, ...] = KINDS
    skip: tuple[str, ...] = ()
    reproved: bool = False  # the remembered choice failed to attach and was proved again

    def labels(self) -> dict[str, str | None]:
        return {name: c.label if c else None for name, c in self.chosen.items()}

    def unobserved(self, stages: tuple[str, ...] = tuple(STAGE_SPANS)) -> list[str]:
        return [s for s in unobserved_stages(self.chosen) if s in stages]

    def missing_required(self) -> list[str]:
        return [b.name for b in BOUNDARIES if b.required and self.chosen.get(b.name) is None]


def choose_hooks(
    kinds: tuple[str, ...] = KINDS,
    path: Path = OBJECT,
    skip: tuple[str, ...] = (),
    cache: bool = True,
    check: bool = True,
) -> HookChoice:
    """The remembered choice for this kernel and object, else a proof: each
    boundary's candidates of the allowed kinds tried in catalogue order;
    boundaries in skip are left unhooked. check=False takes a remembered choice
    unloaded: for a caller that loads it next in a Tracer, whose load is the same
    check (and re-proves a choice that fails) at half the start-up cost."""
    if "tracepoint" in kinds:
        ensure_tracefs()
    digest = hookcache.key(path, kinds, skip)
    remembered = hookcache.load(digest) if cache else None
    if remembered is not None:
        choice = _from_cache(remembered)
        if choice is not None and (not check or try_together(choice, path) is None):
            choice.cached, choice.kinds, choice.skip = True, kinds, skip
            return choice
        hookcache.forget(digest)
    choice = prove_hooks(kinds, path, skip)
    choice.kinds, choice.skip = kinds, skip
    hookcache.store(digest, choice.labels(), choice.refused)
    return choice


def _from_cache(doc: dict[str, object]) -> HookChoice | None:
    """A remembered choice in today's catalogue, or None if the catalogue moved on."""
    chosen = doc.get("chosen")
    refused = doc.get("refused")
    if not isinstance(chosen, dict) or not isinstance(refused, dict):
        return None
    choice = HookChoice(refused={str(k): list(v) for k, v in refused.items()})
    for boundary in BOUNDARIES:
        if boundary.name not in chosen:
            return None
        label = chosen[boundary.name]
        found = [c for c in BY_NAME[boundary.name].candidates if c.label == label]
        if label is not None and not found:
            return None
        choice.chosen[boundary.name] = found[0] if found else None
    return choice


def prove_hooks(
    kinds: tuple[str, ...] = KINDS, path: Path = OBJECT, skip: tuple[str, ...] = ()
) -> HookChoice:
    """Try each boundary's candidates of the allowed kinds, in catalogue order."""
    choice = HookChoice()
    for boundary in BOUNDARIES:
        if boundary.name in skip:
            choice.chosen[boundary.name] = None
            choice.refused[boundary.name] = ["skipped on request"]
            continue
        choice.chosen[boundary.name] = _first_working(boundary, kinds, path, choice)
    return choice


def _first_working(
    boundary: Boundary, kinds: tuple[str, ...], path: Path, choice: HookChoice
) -> Candidate | None:
    for candidate in boundary.candidates:
        if candidate.kind not in kinds:
            continue
        why = try_candidate(candidate, path)
        if why is None:
            return candidate
        choice.refused.setdefault(boundary.name, []).append(f"{candidate.label}: {why}")
    return None


class Armed(ctypes.Structure):
    """bpf/filters.bpf.h's armed: whether flights may begin (its .data.armed section)."""

    _fields_ = [("value", ctypes.c_uint32)]


class Tracer:
    """The loaded and attached object, its live statistics and the hooks it uses."""

    def __init__(self, config: ctypes.Structure, choice: HookChoice, path: Path = OBJECT):
        self.config = config
        self.choice = choice
        self.path = path
        self.obj: BPFObject | None = None
        self.stats: ctypes.Structure | None = None
        self.flights: ctypes.Array[ctypes.Structure] | None = None
        self.armed: ctypes.Structure | None = None

    def __enter__(self) -> Tracer:
        try:
            return self._load()
        except BPFError:
            if not self.choice.cached:
                raise
        # A remembered choice that no longer attaches: prove again, in place.
        hookcache.forget(hookcache.key(self.path, self.choice.kinds, self.choice.skip))
        fresh = choose_hooks(self.choice.kinds, self.path, self.choice.skip, cache=False)
        self.choice.chosen, self.choice.refused = fresh.chosen, fresh.refused
        self.choice.cached, self.choice.reproved = False, True
        return self._load()

    def _load(self) -> Tracer:
        chosen = [c for c in self.choice.chosen.values() if c]
        # The send is split only where a fine transmit hook runs (saves two lookups).
        self.config.fine_tx = int(any(self.choice.chosen.get(b) for b in FINE_TX))
        heads = [self.choice.chosen.get(b) for b in SOCKET_HEADS]
        self.config.sock_storage = int(all(c and c.kind in TYPED_KINDS for c in heads))
        self.config.drop_hook = int(self.choice.chosen.get("drop") is not None)
        self.config.rx_hook = int(self.choice.chosen.get("dev_rx") is not None)
        self.obj = BPFObject(self.path)
        try:
            self.obj.autoload_only({p for c in chosen for p in c.programs})
            self.obj.global_map(".rodata").set_initial_value(self.config)
            self.obj.load()
            for candidate in chosen:
                attach_candidate(self.obj, candidate)
            self.stats = self.obj.global_map(".bss").mmapped(abi.Stats)
            self.flights = self.obj.map("flights").mmapped_array(abi.FlightSlot)
            self.armed = self.obj.global_map(".data.armed").mmapped(Armed)
            self.armed.value = 1
        except BaseException:
            self.obj.close()
            raise
        return self

    def disarm(self, settle_s: float = SETTLE_S) -> None:
        """No flight begins from now on; those under way get settle_s to go on through
        the hooks (still attached) before anything is detached."""
        if self.armed is not None:
            self.armed.value = 0
            time.sleep(settle_s)

    def __exit__(self, *exc: object) -> None:
        if self.obj:
            self.obj.close()
            self.obj = None
            self.stats = None
            self.flights = None

    def recursion_misses(self) -> int:
        """Times a program could not run because another BPF program was running."""
        assert self.obj
        return sum(
            p.info().recursion_misses
            for p in self.obj.programs()
            if p.name in {n for c in self.choice.chosen.values() if c for n in c.programs}
        )


def make_config(
    port_lo: int,
    port_hi: int,
    netns: list[int] | None = None,
    tgid: int | None = None,
    cgroup_id: int | None = None,
    ring: str = "none",
    residence: bool = True,
    sample: int = 1,
    lean: bool = False,
) -> ctypes.Structure:
    """The rodata filters (service ports, namespaces, pid, cgroup: the namespaces
    are the traced host, its scope), how the receiver reads (abi.RING_KINDS: a
    socket, or a PF_PACKET ring of frames or blocks, where its requests end when
    it has seen them), whether requests are paired with their responses (the
    server and client paths), the sample rate (1 datagram in ``sample`` followed:
    profiler.sampling), and whether the run is lean (--detail lean: the merged
    stages of bpf/lean.bpf.h recorded)."""
    cfg = abi.Config(port_lo=port_lo, port_hi=port_hi, ring_receiver=abi.RING_KINDS.index(ring))
    cfg.residence = int(residence)
    cfg.sample = sample
    cfg.lean = int(lean)
    if netns:
        cfg.filter_netns = 1
        for i, inum in enumerate(netns[: abi.CONST["SP_MAX_NETNS"]]):
            cfg.netns[i] = inum
    if tgid is not None:
        cfg.filter_tgid, cfg.tgid = 1, tgid
    if cgroup_id is not None:
        cfg.filter_cgroup, cfg.cgroup_id = 1, cgroup_id
    return cfg
