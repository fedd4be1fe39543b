"""`stackprof doctor` on this kernel (root: it loads and attaches BPF), and its pieces."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from profiler import doctor
from profiler.diagnosis import (
    Check,
    Diagnosis,
    HookPoint,
    KindResult,
    ReceiveHook,
    RxSelfTest,
)
from profiler.hooks import BOUNDARIES, DEVICE_RECEIVES, Candidate, functions_of, unobserved_stages
from profiler.libbpf import BPFObject
from profiler.views.doctor import render

REPO = Path(__file__).resolve().parent.parent
STACKPROF = REPO / ".venv" / "bin" / "stackprof"
KPROBE_EVENTS = Path("/sys/kernel/tracing/kprobe_events")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF")


def stackprof(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would, output piped (not a tty)."""
    return subprocess.run(
        [str(STACKPROF), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def text_run() -> subprocess.CompletedProcess[str]:
    return stackprof("doctor")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    proc = stackprof("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


@pytest.mark.root
@needs_root
def test_exits_0_when_core_trace_can_run(
    text_run: subprocess.CompletedProcess[str], doc: dict[str, Any]
) -> None:
    assert text_run.returncode == 0, text_run.stdout + text_run.stderr
    assert doc["core_trace_ok"] is True
    assert doc["missing_required"] == []
    assert "the core trace can run here" in text_run.stdout


@pytest.mark.root
@needs_root
def test_plain_text_when_piped(text_run: subprocess.CompletedProcess[str]) -> None:
    """Readable in a log or a pipe: no escape sequences, lines not cut."""
    assert "\x1b[" not in text_run.stdout
    assert f"kernel {os.uname().release}" in text_run.stdout
    assert "…" not in text_run.stdout


@pytest.mark.root
@needs_root
def test_text_lists_receive_tracepoints_and_what_fired(
    text_run: subprocess.CompletedProcess[str],
) -> None:
    """A row per receive tracepoint: there, the kind it loads as, fired per mode (the
    self-test itself: tests/test_doctor_receive.py)."""
    screen = text_run.stdout
    assert "receive tracepoints (exists, loads as, fired in the self-test)" in screen
    rows = {line.split()[0]: line.split() for line in screen.splitlines() if line.strip()}
    for name in (*DEVICE_RECEIVES, "netif_receive_skb"):
        assert rows[name][2] == "yes" and rows[name][3] in ("tp_btf", "raw_tp"), rows[name]
    assert rows["netif_rx"][4:] == ["yes", "(18)", "no"], rows["netif_rx"]
    assert rows["napi_gro_receive_entry"][4:] == ["no", "yes", "(18)"]
    assert "self-test napi: 3 UDP datagrams of 8192 bytes (6 packets each at MTU 1500)" in screen
    assert "device receive fired: backlog: netif_rx (3/3 datagrams); napi:" in screen


def feature_line(screen: str, name: str) -> str:
    return next(x for x in screen.splitlines() if x.strip().startswith(name))


@pytest.mark.root
@needs_root
@pytest.mark.parametrize(
    ("feature", "kinds"),
    [("kprobes", ("kprobe", "kretprobe")), ("fentry/fexit", ("fentry", "fexit"))],
)
def test_function_hook_features_follow_their_proofs(
    text_run: subprocess.CompletedProcess[str],
    doc: dict[str, Any],
    feature: str,
    kinds: tuple[str, ...],
) -> None:
    """A feature made of attach kinds is ok exactly when every kind was proved here (whatever
    this kernel has); when one is not, the check says which and why, and what to do."""
    proved = [doc["attach"][k]["works"] for k in kinds]
    check = doc["checks"][feature]
    if all(proved):
        assert check["status"] == "ok" and check["fix"] is None, check
        assert "ok" in feature_line(text_run.stdout, feature)
        return
    assert check["status"] == "missing" and check["fix"], check
    for kind, works in zip(kinds, proved, strict=True):
        if not works:
            assert f"{kind}: {doc['attach'][kind]['error']}" in check["detail"], check
    assert "missing" in feature_line(text_run.stdout, feature)
    if feature == "kprobes" and not KPROBE_EVENTS.exists():
        assert "no kprobe_events in tracefs" in check["detail"]


@pytest.mark.root
@needs_root
def test_tracepoint_family_and_socket_kinds_work(doc: dict[str, Any]) -> None:
    for kind in ("tp_btf", "raw_tp", "tracepoint", "socket_filter", "tc", "xdp"):
        assert doc["attach"][kind]["works"] is True, doc["attach"][kind]
    assert doc["attach"]["tp_btf"]["proof"] == "attach"
    assert doc["attach"]["socket_filter"]["proof"] == "socket"


@pytest.mark.root
@needs_root
def test_every_boundary_reported(doc: dict[str, Any]) -> None:
    """Whatever the catalogue holds today, each hook point has an entry."""
    assert list(doc["hooks"]) == [b.name for b in BOUNDARIES]
    for b in BOUNDARIES:
        entry = doc["hooks"][b.name]
        assert entry["required"] == b.required
        if b.required:
            assert entry["hook"] is not None, entry
        if entry["hook"] is None:
            assert entry["refused"], f"{b.name}: no hook and no reason"
        else:
            assert entry["hook"] in [c.label for c in b.candidates], entry


def attach_kinds(candidate: Candidate) -> tuple[str, ...]:
    """The attach kinds a candidate's programs need (fentry candidates may hold fexit ones)."""
    if candidate.kind == "fentry":
        return tuple(k for k in ("fentry", "fexit") if k in candidate.target) or ("fentry",)
    if candidate.kind == "kprobe":
        return (
            ("kprobe", "kretprobe")
            if any("kretprobe" in p for p in candidate.programs)
            else ("kprobe",)
        )
    return (candidate.kind,)


@pytest.mark.root
@needs_root
def test_chosen_hooks_agree_with_the_attach_proofs(doc: dict[str, Any]) -> None:
    """Each hook point uses a candidate whose attach kinds were proved here, and every
    candidate before it in preference order was tried and refused."""
    for b in BOUNDARIES:
        entry = doc["hooks"][b.name]
        if entry["hook"] is None:
            continue
        labels = [c.label for c in b.candidates]
        chosen = b.candidates[labels.index(entry["hook"])]
        for kind in attach_kinds(chosen):
            assert doc["attach"][kind]["works"], (b.name, kind, doc["attach"][kind])
        for earlier in b.candidates[: labels.index(entry["hook"])]:
            assert any(r.startswith(f"{earlier.label}:") for r in entry["refused"]), (b.name, entry)


@pytest.mark.root
@needs_root
def test_tp_btf_carries_the_btf_family_where_it_attaches(doc: dict[str, Any]) -> None:
    """Where tp_btf is a candidate and attaches here, no candidate after the first tp_btf
    one in preference order (raw_tp, tracepoint, or a narrower tp_btf) is used."""
    if not doc["attach"]["tp_btf"]["works"]:
        pytest.skip("tp_btf does not attach on this kernel")
    for b in BOUNDARIES:
        kinds = [c.kind for c in b.candidates]
        if "tp_btf" in kinds and doc["hooks"][b.name]["hook"] is not None:
            used = [c.label for c in b.candidates].index(doc["hooks"][b.name]["hook"])
            assert used <= kinds.index("tp_btf"), doc["hooks"][b.name]


@pytest.mark.root
@needs_root
def test_unobserved_matches_missing_fine_hooks(doc: dict[str, Any]) -> None:
    chosen = {
        name: Candidate(h["kind"], "", ()) if h["hook"] else None
        for name, h in doc["hooks"].items()
    }
    assert doc["unobserved"] == unobserved_stages(chosen)


@pytest.mark.root
@needs_root
def test_environment_checks(doc: dict[str, Any]) -> None:
    checks = doc["checks"]
    assert checks["btf"]["status"] == "ok"
    assert checks["root"]["status"] == "ok"
    assert checks["tracefs"]["status"] in ("ok", "info")
    for name in ("rds", "packet_ring_v2", "packet_ring_v3", "nf_defrag", "bpffs", "bpf_stats"):
        assert checks[name]["status"] in ("ok", "missing", "info"), checks[name]
        if checks[name]["status"] == "missing":
            assert checks[name]["fix"], checks[name]
    assert checks["packet_ring_v2"]["status"] == "ok"
    assert checks["packet_ring_v3"]["status"] == "ok"


def test_bad_input_exits_2_one_line() -> None:
    proc = stackprof("doctor", "--no-such-option")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.root
@needs_root
def test_no_bpf_left_behind(doc: dict[str, Any]) -> None:
    """Doctor's probes go with the process: no probe program stays loaded."""
    proc = subprocess.run(
        ["bpftool", "prog", "show"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "probe_" not in proc.stdout


@pytest.mark.root
@needs_root
def test_host_loopback_untouched(doc: dict[str, Any]) -> None:
    """TC and XDP are proved in a child's throwaway namespace, never on a real interface."""
    link = subprocess.run(["ip", "-d", "link", "show", "lo"], capture_output=True, text=True)
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True)
    assert "xdp" not in link.stdout
    assert "clsact" not in qdisc.stdout


@pytest.mark.root
@needs_root
def test_throwaway_netns_reports_the_childs_errno() -> None:
    def refuse(prog_fd: int) -> None:
        raise OSError(errno.ENODEV, "no device")

    with BPFObject(doctor.PROBE_OBJECT) as obj:
        obj.autoload_only({"probe_xdp"})
        obj.load()
        with pytest.raises(OSError) as caught:
            doctor._attach_in_throwaway_netns(obj, "probe_xdp", refuse)
    assert caught.value.errno == errno.ENODEV


def _fake(missing: list[str]) -> Diagnosis:
    return Diagnosis(
        kernel="1.2.3-test",
        root=True,
        attach=[KindResult("kprobe", False, "attach", "no such file")],
        hooks=[HookPoint("x", "what", True, None, None, ["kprobe:f: refused"], {"f": None})],
        unobserved=["total"],
        missing_required=missing,
        checks=[Check("rds", "missing", "no RDS", "modprobe rds")],
        receive_hooks=[
            ReceiveHook("netif_rx", "dev_rx", True, "raw_tp", ["tp_btf:netif_rx: refused"]),
            ReceiveHook("gone_entry", "dev_rx", False, None, ["not in this kernel"]),
        ],
        rx_selftest=[
            RxSelfTest("backlog", 3, 8192, 1500, 3, {"netif_rx": 18, "gone_entry": 0}),
            RxSelfTest("napi", 3, 8192, 1500, error="ethtool -K x: needs ethtool"),
        ],
    )


def test_render_says_what_to_do() -> None:
    console = Console(width=200, force_terminal=False)
    with console.capture() as cap:
        console.print(render(_fake(["x"])))
    out = cap.get()
    assert "no: no such file" in out
    assert "-> modprobe rds" in out
    assert "f: not in kallsyms" in out
    assert "cannot run: no working hook for x" in out
    assert "tp_btf:netif_rx: refused" in out
    assert "self-test napi: 3 UDP datagrams" in out and "failed: ethtool -K x: needs ethtool" in out
    netif_rx = next(line for line in out.splitlines() if line.strip().startswith("netif_rx"))
    assert netif_rx.split() == ["netif_rx", "dev_rx", "yes", "raw_tp", "yes", "(18)", "-"]


def test_functions_of_candidates() -> None:
    candidates = (
        Candidate("fentry", "fexit/ip_defrag,fentry/udp_rcv", ("a", "b")),
        Candidate("kprobe", "ip_defrag", ("c",)),
        Candidate("tp_btf", "netif_rx", ("d",)),
    )
    assert functions_of(candidates) == ["ip_defrag", "udp_rcv"]


@pytest.fixture
def reachable_by_others() -> Iterator[None]:
    """Let an unprivileged user reach the checkout for one test: a clone under a 0700
    folder (mktemp -d) is closed to it. Every folder's mode is restored after."""
    changed = []
    for folder in (REPO, *REPO.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
            changed.append((folder, mode))
    try:
        yield
    finally:
        for folder, mode in changed:
            folder.chmod(mode)


@pytest.mark.root
@needs_root
@pytest.mark.usefixtures("reachable_by_others")
def test_not_root_exits_1_without_traceback() -> None:
    """An unprivileged user gets the report (nothing proved) and exit 1, not a crash."""
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(STACKPROF)]
        + ["doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["root"] is False
    assert doc["checks"]["root"]["status"] == "missing"
    assert doc["core_trace_ok"] is False
    assert {m: t["skipped"] for m, t in doc["rx_selftest"].items()} == dict.fromkeys(
        ("backlog", "napi"), "needs root: network namespaces and tracefs"
    )
    assert all(h["kind"] is None for h in doc["receive_hooks"].values())
