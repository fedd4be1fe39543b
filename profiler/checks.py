"""Doctor's checks of features and settings, each a Check: ok, missing (and what to do), info.

Attach kinds come proved (:mod:`profiler.doctor`); the rest is read from the
running system: BTF, RDS, PF_PACKET rings, conntrack's defragmentation, tracefs,
bpffs and BPF run-time statistics, and the verdict of the receive self-test
(:mod:`profiler.receive`). Nothing here loads BPF.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from profiler import kallsyms, loader
from profiler.diagnosis import PROBES, Check, HookPoint, KindResult, RxSelfTest
from profiler.errors import one_line
from profiler.hooks import DEVICE_RECEIVES
from profiler.transports import rds_missing

BTF = Path("/sys/kernel/btf/vmlinux")
BPFFS = Path("/sys/fs/bpf")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
KPROBE_EVENTS = loader.TRACEFS / "kprobe_events"
CONNTRACK_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_VERSIONS = {"v2": 1, "v3": 2}
# The smallest rings: one page-sized block of two frames (tpacket_req / tpacket_req3).
TPACKET_REQ = {
    "v2": struct.pack("=IIII", 4096, 1, 2048, 2),
    "v3": struct.pack("=IIIIIII", 4096, 1, 2048, 2, 10, 0, 0),
}


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


def tracefs_mounted() -> bool:
    """Whether tracefs has its events (unreadable to non-root: counted as not mounted)."""
    try:
        return (loader.TRACEFS / "events").is_dir()
    except OSError:
        return False


def _kind_check(name: str, results: dict[str, KindResult], kinds: tuple[str, ...]) -> Check:
    """A feature made of attach kinds: ok only if every one of them attached."""
    failed = [results[k] for k in kinds if k in results and not results[k].works]
    if not failed:
        return Check(name, "ok", f"{'/'.join(kinds)} attach")
    probe = next(p for p in PROBES if p.kind == failed[0].kind)
    why = "; ".join(f"{r.kind}: {r.error}" for r in failed)
    return Check(name, "missing", why, probe.fix)


def attach_checks(results: dict[str, KindResult]) -> list[Check]:
    """kprobes and fentry/fexit always; any other attach kind only when it failed."""
    kprobes = _kind_check("kprobes", results, ("kprobe", "kretprobe"))
    if kprobes.status == "missing" and tracefs_mounted() and not _exists(KPROBE_EVENTS):
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


def hook_checks(points: list[HookPoint], unobserved: list[str]) -> list[Check]:
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


def btf_check() -> Check:
    if _exists(BTF):
        return Check("btf", "ok", f"{BTF} present (CO-RE, tp_btf, fentry)")
    return Check(
        "btf",
        "missing",
        f"{BTF} absent: no CO-RE relocation, tp_btf or fentry",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's)",
    )


def root_check(root: bool) -> Check:
    if root:
        return Check("root", "ok", "running as root")
    return Check(
        "root",
        "missing",
        "not root: nothing could be loaded, so no attach kind or hook point is proved",
        "run as root (BPF needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
    )


def rds_check() -> Check:
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
        return one_line(exc)
    return None


def packet_checks() -> list[Check]:
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


def defrag_check() -> Check:
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


def tracefs_check(was_mounted: bool, root: bool) -> Check:
    if not root:
        return Check("tracefs", "info", "not checked: tracefs is unreadable without root")
    if was_mounted:
        return Check("tracefs", "ok", f"mounted at {loader.TRACEFS}")
    if tracefs_mounted():
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


def bpffs_check() -> Check:
    if _mounted("bpf", BPFFS):
        return Check("bpffs", "ok", f"mounted at {BPFFS}")
    return Check(
        "bpffs",
        "missing",
        f"not mounted at {BPFFS}",
        "not needed by stackprof (it pins nothing); for bpftool pinning: mount -t bpf bpf "
        "/sys/fs/bpf",
    )


def bpf_stats_check() -> Check:
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


def receive_check(tests: list[RxSelfTest]) -> Check:
    """Whether a device-receive tracepoint fired for the datagrams of each receive mode."""
    ran = [t for t in tests if t.ran and t.received]
    seen = {t.mode: [n for n in t.fired_names() if n in DEVICE_RECEIVES] for t in ran}
    detail = "; ".join(
        f"{t.mode}: {', '.join(seen[t.mode]) or 'none'} ({t.received}/{t.datagrams} datagrams)"
        for t in ran
    )
    other = [t for t in tests if t not in ran]
    not_run = "; ".join(f"{t.mode}: {t.skipped or t.error or 'no datagram arrived'}" for t in other)
    if not ran:
        return Check("rx_selftest", "info", f"receive self-test not run: {not_run}")
    if not_run:
        detail += f"; not run: {not_run}"
    blind = [t.mode for t in ran if not seen[t.mode]]
    if blind:
        return Check(
            "rx_selftest",
            "missing",
            f"no device-receive tracepoint fired: {detail}",
            f"dev_rx stamps no datagram received the {'/'.join(blind)} way here: "
            "the driver and backlog stages are not observed for such devices",
        )
    return Check("rx_selftest", "info" if other else "ok", f"device receive fired: {detail}")
