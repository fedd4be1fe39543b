"""`stackprof doctor`: what this kernel lets stackprof do, proved rather than guessed.

Every attach kind is proved by loading (and, where it is harmless, attaching) a trivial program
of ``bpf/probe.bpf.c``; the hook per hook point is what ``choose_hooks`` picks, the same proof
``stackprof trace`` runs. Version numbers are never consulted: distributions backport and strip.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler import kallsyms, loader
from profiler.hooks import BOUNDARIES, Candidate
from profiler.libbpf import BPFObject

PROBE_OBJECT = loader.OBJECT.parent / "probe.bpf.o"
BTF = Path("/sys/kernel/btf/vmlinux")
BPFFS = Path("/sys/fs/bpf")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
KPROBE_EVENTS = loader.TRACEFS / "kprobe_events"
CONNTRACK_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")
FUNCTION_KINDS = frozenset({"fentry", "fexit", "kprobe", "kretprobe"})

SO_ATTACH_BPF = 50
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_VERSIONS = {"v2": 1, "v3": 2}
# The smallest rings: one page-sized block of two frames (tpacket_req / tpacket_req3).
TPACKET_REQ = {
    "v2": struct.pack("=IIII", 4096, 1, 2048, 2),
    "v3": struct.pack("=IIIIIII", 4096, 1, 2048, 2, 10, 0, 0),
}

CLONE_NEWNET = 0x40000000
BPF_XDP = 37  # enum bpf_attach_type
BPF_TC_INGRESS = 1  # enum bpf_tc_attach_point
LOOPBACK_IFINDEX = 1  # lo is always ifindex 1 in a new network namespace


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libbpf = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
for _name, _args in (
    ("bpf_prog_get_fd_by_id", [ctypes.c_uint32]),
    ("bpf_link_create", [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]),
    ("bpf_tc_hook_create", [ctypes.POINTER(TcHook)]),
    ("bpf_tc_attach", [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
):
    getattr(_libbpf, _name).restype = ctypes.c_int
    getattr(_libbpf, _name).argtypes = _args


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
class Diagnosis:
    """Everything doctor found; ``as_json`` is the --json document."""

    kernel: str
    root: bool
    attach: list[KindResult]
    hooks: list[HookPoint]
    unobserved: list[str]
    missing_required: list[str]
    checks: list[Check]

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
        }


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _prog_fd(obj: BPFObject, name: str) -> int:
    """A new fd for a loaded program, found by id (libbpf.Program exposes no fd)."""
    fd = _libbpf.bpf_prog_get_fd_by_id(obj.program(name).info().id)
    if fd < 0:
        err = ctypes.get_errno() or -fd
        raise OSError(err, f"fd of {name}: {os.strerror(err)}")
    return int(fd)


def _attach_to_socket(obj: BPFObject, name: str) -> None:
    """Attach a socket filter to a throwaway UDP socket: proof without touching traffic."""
    fd = _prog_fd(obj, name)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)
    finally:
        os.close(fd)


def _check(ret: int, what: str) -> int:
    """libbpf returns -errno on failure."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def _attach_xdp(prog_fd: int) -> None:
    os.close(_check(_libbpf.bpf_link_create(prog_fd, LOOPBACK_IFINDEX, BPF_XDP, None), "xdp"))


def _attach_tc(prog_fd: int) -> None:
    hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=LOOPBACK_IFINDEX, attach_point=BPF_TC_INGRESS)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, handle=1, priority=1)
    _check(_libbpf.bpf_tc_hook_create(ctypes.byref(hook)), "tc clsact")
    _check(_libbpf.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), "tc attach")


def _child_netns_status(prog_fd: int, attach: Callable[[int], None]) -> int:
    """In the forked child: errno of the attach in a fresh network namespace, 0 if it worked."""
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            return ctypes.get_errno() or errno.EPERM
        attach(prog_fd)
    except OSError as exc:
        return exc.errno or errno.EINVAL
    except BaseException:
        return errno.EINVAL
    return 0


def _attach_in_throwaway_netns(obj: BPFObject, name: str, attach: Callable[[int], None]) -> None:
    """Attach to lo of a new network namespace owned by a child process: the namespace, and
    the attachment with it, vanish when the child exits; no real interface is touched."""
    fd = _prog_fd(obj, name)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(min(_child_netns_status(fd, attach), 255))
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError(code, f"attach {name} in a new netns: {os.strerror(code)}")


NETNS_ATTACH: dict[str, Callable[[int], None]] = {"tc": _attach_tc, "xdp": _attach_xdp}


def prove(probe: Probe, path: Path = PROBE_OBJECT) -> KindResult:
    """Load the probe's program alone, then attach it as its proof says; detach at once."""
    try:
        with BPFObject(path) as obj:
            obj.autoload_only({probe.program})
            obj.load()
            if probe.proof == "attach":
                obj.attach(probe.program)
            elif probe.proof == "socket":
                _attach_to_socket(obj, probe.program)
            elif probe.proof in NETNS_ATTACH:
                _attach_in_throwaway_netns(obj, probe.program, NETNS_ATTACH[probe.proof])
    except OSError as exc:
        return KindResult(probe.kind, False, probe.proof, _one_line(exc))
    return KindResult(probe.kind, True, probe.proof)


def _functions(candidates: tuple[Candidate, ...]) -> list[str]:
    """Kernel functions named by function-hook candidates ("fexit/ip_defrag,..." or "udp_rcv")."""
    names: list[str] = []
    for c in candidates:
        if c.kind in FUNCTION_KINDS:
            names += [t.rsplit("/", 1)[-1] for t in c.target.split(",") if t]
    return list(dict.fromkeys(names))


def hook_points(choice: loader.HookChoice) -> list[HookPoint]:
    """Per boundary of the catalogue (whatever it holds today): the hook chosen, others refused."""
    points = []
    for boundary in BOUNDARIES:
        chosen = choice.chosen.get(boundary.name)
        symbols = {f: kallsyms.resolve(f) for f in _functions(boundary.candidates)}
        points.append(
            HookPoint(
                name=boundary.name,
                what=boundary.what,
                required=boundary.required,
                hook=chosen.label if chosen else None,
                kind=chosen.kind if chosen else None,
                refused=list(choice.refused.get(boundary.name, [])),
                symbols=symbols,
            )
        )
    return points


def _mounted(fstype: str, where: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(
        len(f) > 2 and f[1] == str(where) and f[2] == fstype for f in (m.split() for m in mounts)
    )


def _exists(path: Path) -> bool:
    """Path.exists that reads an unreadable path (non-root in tracefs) as absent."""
    try:
        return path.exists()
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _kind_check(name: str, results: dict[str, KindResult], kinds: tuple[str, ...]) -> Check:
    """A feature made of attach kinds: ok only if every one of them attached."""
    failed = [results[k] for k in kinds if k in results and not results[k].works]
    if not failed:
        return Check(name, "ok", f"{'/'.join(kinds)} attach")
    probe = next(p for p in PROBES if p.kind == failed[0].kind)
    why = "; ".join(f"{r.kind}: {r.error}" for r in failed)
    return Check(name, "missing", why, probe.fix)


def _attach_checks(results: dict[str, KindResult]) -> list[Check]:
    kprobes = _kind_check("kprobes", results, ("kprobe", "kretprobe"))
    if kprobes.status == "missing" and _tracefs_mounted() and not _exists(KPROBE_EVENTS):
        kprobes.detail += " (no kprobe_events in tracefs: built without CONFIG_KPROBES)"
    fentry = _kind_check("fentry/fexit", results, ("fentry", "fexit"))
    if fentry.status == "missing" and "not permitted" in fentry.detail:
        fentry.detail += " (EPERM at load as root: no BPF trampoline in this kernel)"
    checks = [kprobes, fentry]
    for kind in ("tp_btf", "raw_tp", "tracepoint", "socket_filter", "tc", "xdp"):
        check = _kind_check(kind, results, (kind,))
        if check.status != "ok":
            checks.append(check)
    return checks


def _hook_checks(points: list[HookPoint], unobserved: list[str]) -> list[Check]:
    """Hook points no candidate could serve: required ones stop the trace, others hide stages."""
    checks = []
    required = [p.name for p in points if p.required and p.hook is None]
    if required:
        checks.append(
            Check(
                "required hooks",
                "missing",
                f"no working hook for {', '.join(required)} (reasons under refused above)",
                "the core trace cannot run here: it needs a kernel where one candidate of each "
                "of these points attaches (e.g. one that has their tracepoints)",
            )
        )
    optional = [p for p in points if not p.required and p.hook is None]
    if optional and unobserved:
        functions = any(p.symbols for p in optional)
        checks.append(
            Check(
                "fine hooks",
                "missing",
                f"unhooked: {', '.join(p.name for p in optional)}; stages not observed: "
                f"{', '.join(unobserved)}",
                "kprobes or fentry (any distribution kernel) hook the function-level points; "
                "the coarse stages still add up to the total"
                if functions
                else "a kernel where one of their candidates attaches",
            )
        )
    return checks


def _btf_check() -> Check:
    if _exists(BTF):
        return Check("btf", "ok", f"{BTF} present (CO-RE, tp_btf, fentry)")
    return Check(
        "btf",
        "missing",
        f"{BTF} absent: no CO-RE relocation, tp_btf or fentry",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's)",
    )


def _root_check(root: bool) -> Check:
    if root:
        return Check("root", "ok", "running as root")
    return Check(
        "root",
        "missing",
        "not root: nothing could be loaded, so no attach kind or hook point is proved",
        "run as root (BPF needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
    )


def _rds_check() -> Check:
    from profiler.commands import rds_missing

    why = rds_missing()
    if why is None:
        return Check("rds", "ok", "socket(AF_RDS) works, rds_tcp loaded: --transport rds runs")
    return Check(
        "rds",
        "missing",
        why,
        "modprobe rds rds_tcp (if the kernel ships them); only --transport rds needs it",
    )


def packet_ring_error(version: str) -> str | None:
    """None if an AF_PACKET socket accepts a TPACKET ring of this version, else why not."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_VERSIONS[version])
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, TPACKET_REQ[version])
    except OSError as exc:
        return _one_line(exc)
    return None


def _packet_checks() -> list[Check]:
    checks = []
    for version in TPACKET_VERSIONS:
        why = packet_ring_error(version)
        name = f"packet_ring_{version}"
        if why is None:
            checks.append(Check(name, "ok", f"PACKET_RX_RING with TPACKET_{version.upper()}"))
        else:
            checks.append(
                Check(
                    name,
                    "missing",
                    f"TPACKET_{version.upper()} ring refused: {why}",
                    "needs CONFIG_PACKET (modprobe af_packet) and root; only the "
                    f"packet-{version} transport needs it",
                )
            )
    return checks


def _defrag_check() -> Check:
    """Conntrack's defragmentation moves IPv4 reassembly from local delivery to PREROUTING."""
    if kallsyms.resolve("nf_defrag_ipv4_enable") is None:
        return Check("nf_defrag", "ok", "nf_defrag_ipv4 absent: reassembly at local delivery")
    count = _read(CONNTRACK_COUNT)
    here = f"; conntrack entries in this namespace: {count}" if count is not None else ""
    return Check(
        "nf_defrag",
        "info",
        "nf_defrag_ipv4 present (built in or loaded): in a network namespace where conntrack "
        "is used (ct rules, NAT), IPv4 fragments are reassembled at netfilter PREROUTING, "
        "before routing, instead of at local delivery (ip_local_deliver)" + here,
        "stackprof's own namespaces use no conntrack; with attach, expect reassembly to show "
        "before the IP receive hooks where conntrack is in use",
    )


def _tracefs_check(was_mounted: bool, root: bool) -> Check:
    if not root:
        return Check("tracefs", "info", "not checked: tracefs is unreadable without root")
    if was_mounted:
        return Check("tracefs", "ok", f"mounted at {loader.TRACEFS}")
    if _tracefs_mounted():
        return Check(
            "tracefs",
            "info",
            f"was not mounted; mounted it at {loader.TRACEFS} (stackprof trace does the same)",
            "nothing to do (classic tracepoints need it; tp_btf and raw_tp do not)",
        )
    return Check(
        "tracefs",
        "missing",
        "not mounted and could not be mounted: classic tracepoints cannot attach",
        "mount -t tracefs nodev /sys/kernel/tracing",
    )


def _bpffs_check() -> Check:
    if _mounted("bpf", BPFFS):
        return Check("bpffs", "ok", f"mounted at {BPFFS}")
    return Check(
        "bpffs",
        "missing",
        f"not mounted at {BPFFS}",
        "not needed by stackprof (it pins nothing); for bpftool pinning: mount -t bpf bpf "
        "/sys/fs/bpf",
    )


def _bpf_stats_check() -> Check:
    value = _read(BPF_STATS)
    if value == "1":
        return Check("bpf_stats", "ok", "kernel.bpf_stats_enabled=1 (per-program run time)")
    return Check(
        "bpf_stats",
        "missing",
        f"kernel.bpf_stats_enabled={value if value is not None else 'absent'}: no per-program "
        "run time (the overhead benchmark needs it)",
        "sysctl -w kernel.bpf_stats_enabled=1 while measuring (it costs ~8% throughput)",
    )


def _tracefs_mounted() -> bool:
    """Whether tracefs has its events (unreadable to non-root: counted as not mounted)."""
    try:
        return (loader.TRACEFS / "events").is_dir()
    except OSError:
        return False


def _unproved(why: str) -> tuple[list[KindResult], loader.HookChoice]:
    """Nothing can be loaded (not root): every kind and hook point reads as refused, why."""
    attach = [KindResult(p.kind, False, p.proof, why) for p in PROBES]
    choice = loader.HookChoice()
    for boundary in BOUNDARIES:
        choice.chosen[boundary.name] = None
        choice.refused[boundary.name] = [why]
    return attach, choice


def _prove_all(probe_object: Path, object_path: Path) -> tuple[list[KindResult], loader.HookChoice]:
    loader.ensure_tracefs()
    attach = [prove(p, probe_object) for p in PROBES]
    return attach, loader.choose_hooks(path=object_path)


def diagnose(probe_object: Path = PROBE_OBJECT, object_path: Path = loader.OBJECT) -> Diagnosis:
    """Run every proof and check; loads and attaches BPF programs for an instant each."""
    tracefs_was_mounted = _tracefs_mounted()
    root = os.geteuid() == 0
    if root:
        attach, choice = _prove_all(probe_object, object_path)
    else:
        attach, choice = _unproved("not proved: loading BPF needs root")
    results = {r.kind: r for r in attach}
    points = hook_points(choice)
    checks = [
        _root_check(root),
        *_hook_checks(points, choice.unobserved()),
        _btf_check(),
        *(_attach_checks(results) if root else []),
        _rds_check(),
        *_packet_checks(),
        _defrag_check(),
        _tracefs_check(tracefs_was_mounted, root),
        _bpffs_check(),
        _bpf_stats_check(),
    ]
    return Diagnosis(
        kernel=os.uname().release,
        root=root,
        attach=attach,
        hooks=points,
        unobserved=choice.unobserved(),
        missing_required=choice.missing_required(),
        checks=checks,
    )


PROOF_TEXT = {
    "attach": "loaded+attached",
    "socket": "attached to a throwaway socket",
    "tc": "attached to lo of a throwaway netns",
    "xdp": "attached to lo of a throwaway netns",
}
STATUS_STYLE = {"ok": "green", "missing": "red", "info": "yellow"}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def attach_table(diag: Diagnosis) -> Table:
    """Attach kinds, each proved by its probe program."""
    table = _table(f"attach kinds (proved with {PROBE_OBJECT.name})", "kind", "works", "proof")
    for r in diag.attach:
        works = Text("yes", style="green") if r.works else Text(f"no: {r.error}", style="red")
        proof = PROOF_TEXT.get(r.proof, r.proof)
        table.add_row(r.kind, works, proof)
    return table


def hooks_table(diag: Diagnosis) -> Table:
    """Per hook point, the hook stackprof trace would use here."""
    table = _table("hook points (what stackprof trace would use)", "point", "hook", "refused")
    for h in diag.hooks:
        name = f"{h.name}*" if h.required else h.name
        hook = Text(h.hook or "none", style="" if h.hook else "red")
        resolved = [f"{t}->{s}" for t, s in h.symbols.items() if s and s != t]
        resolved += [f"{t}: not in kallsyms" for t, s in h.symbols.items() if s is None]
        if resolved:
            hook.append(f" ({', '.join(resolved)})", style="dim")
        table.add_row(name, hook, Text("\n".join(h.refused), style="dim"))
    return table


def checks_table(diag: Diagnosis) -> Table:
    """Features and settings, with one line on what to do about each missing one."""
    table = _table("features", "feature", "status", "detail / what to do")
    for c in diag.checks:
        cell = Text(c.detail)
        if c.fix:
            cell.append(f"\n-> {c.fix}", style="bold")
        table.add_row(c.name, Text(c.status, style=STATUS_STYLE[c.status]), cell)
    return table


def verdict(diag: Diagnosis) -> Text:
    unobserved = ", ".join(diag.unobserved) or "none"
    if diag.core_trace_ok:
        return Text(f"the core trace can run here; unobserved stages: {unobserved}", "green")
    return Text(
        f"the core trace cannot run: no working hook for {', '.join(diag.missing_required)}",
        "bold red",
    )


def render(diag: Diagnosis) -> RenderableType:
    header = Text(f"stackprof doctor: kernel {diag.kernel}", style="bold")
    note = Text("* required hook point", style="dim")
    parts: list[RenderableType] = [header, attach_table(diag), hooks_table(diag), note]
    parts.append(checks_table(diag))
    return Group(*parts, verdict(diag))


def _console() -> Console:
    """Rich when a terminal, wide plain text when piped (so tables do not wrap at 80)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    return console


def run(as_json: bool = False) -> int:
    """Exit 0 when the core trace can run here, 1 when a required hook point has no hook."""
    diag = diagnose()
    if as_json:
        sys.stdout.write(json.dumps(diag.as_json(), indent=1) + "\n")
    else:
        _console().print(render(diag))
    return 0 if diag.core_trace_ok else 1
