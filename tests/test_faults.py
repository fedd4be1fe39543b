"""Faults in the network, counted: stackprof against the kernel's own counters (real kernel).

MTU 1500, 8 KiB datagrams (6 fragments each). In the run's own namespaces: nftables
drops a share of all fragments, or exactly the first, a middle or the last fragment of
a share of the datagrams; crafted fragments (a raw socket) come twice, overlap or out
of order; fragments are held past a reassembly timeout shortened to 1 s
(``net.ipv4.ipfrag_time``). Each case runs under both commands:

- ``stackprof trace``: its own topology and closed-loop clients; drops hit the 8 KiB
  responses at the client's veth, crafted fragments go to the server's port. The test
  finds the run's namespaces as they appear, sets them up, and holds them open so their
  counters can be read after the run removed them and the reassembly timers ran.
- ``stackprof attach``: a topology made here; third-party traffic (sockperf's one-way
  throughput mode, or the crafted sender) into the server namespace.

stackprof's incomplete and dropped datagrams are held against the receiving namespace's
ReasmTimeout, ReasmFails, ReasmOverlaps (``/proc/net/netstat``) and UDP RcvbufErrors,
within 2%; the flight table stays clear (flight_full 0), nothing is mis-paired, and
the views say what was lost. (The view tests at the end need no root.)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faults import (
    NETNS_DIR,
    FragmentDrop,
    HeldNamespace,
    Step,
    craft,
    fragments,
    in_netns,
    receiver,
    set_reassembly,
    snmp,
    wait_for,
)
from rich.console import Console
from sockperf import attach_ready, port_bound, sockperf_server

from profiler.run import Run
from profiler.views.compare import render_compare
from profiler.views.live import render
from profiler.views.report import render_report
from servers.topology import Topology
from tests.prometheus_server import free_port

PORT = 7100
MTU = 1500
SIZE = 8192
FRAG_TIME = 1  # seconds an incomplete reassembly is kept (net.ipv4.ipfrag_time)
SETTLE_S = FRAG_TIME + 1.0  # for the kernel's reassembly timers to run out
MODES = ("trace", "attach")
N = 20  # crafted datagrams of each kind
LOSS_KEYS = ("incomplete", "undelivered", "in_transit")
KERNEL_KEYS = (
    "Ip:ReasmTimeout", "Ip:ReasmFails", "Ip:ReasmOKs", "IpExt:ReasmOverlaps",
    "Icmp:OutTimeExcds", "Udp:InDatagrams", "Udp:RcvbufErrors",
)  # fmt: skip


KERNEL = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]


def kernel(test: Callable[..., None]) -> Callable[..., None]:
    """A test on the real kernel (root); the view tests at the end run anywhere."""
    for mark in KERNEL:
        test = mark(test)
    return test


def within(ours: int, theirs: int, share: float = 0.02) -> bool:
    """ours is theirs within share (rounded up to a whole datagram)."""
    return abs(ours - theirs) <= math.ceil(share * theirs)


@dataclass
class Lab:
    """Where traffic goes: the namespaces (names or held paths), addresses, veth ends."""

    client_ns: str
    server_ns: str
    client_ip: str
    server_ip: str
    client_if: str
    server_if: str


@dataclass
class Outcome:
    """One run: its --json document and screen, the kernel's counters per namespace
    (read after the reassembly timers ran), what nftables dropped."""

    doc: dict[str, Any]
    stdout: str
    client: dict[str, int]
    server: dict[str, int]
    nft_dropped: int = 0
    app: dict[str, Any] = field(default_factory=dict)

    def row(self, path: str) -> dict[str, int]:
        return dict(self.doc["datagrams"][path])

    def stage_count(self, path: str, stage: str) -> int:
        return next(
            int(s["count"]) for s in self.doc["stages"] if (s["path"], s["stage"]) == (path, stage)
        )


Fault = tuple[str, int, int] | None  # FragmentDrop's which, percent, offset
Traffic = Callable[[Lab], dict[str, Any]]


def sockperf_load(lab: Lab) -> dict[str, Any]:
    """12,000 8 KiB datagrams at 2,400/s one way into the server namespace (~5 s)."""
    out = in_netns(
        lab.client_ns,
        "sockperf", "tp", "-i", lab.server_ip, "-p", str(PORT),
        "-m", str(SIZE), "-t", "5", "--mps=2400",
        timeout=60,
    )  # fmt: skip
    sent = [line for line in out.splitlines() if "messages sent" in line]
    return {"sockperf": sent[-1] if sent else out[-300:]}


def crafted(plan: list[Step]) -> Traffic:
    """Traffic: the plan's crafted fragments, client namespace to the server's port."""

    def send(lab: Lab) -> dict[str, Any]:
        craft(lab.client_ns, lab.client_ip, lab.server_ip, PORT, SIZE, plan)
        return {}

    return send


def _run_cli(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "profiler", *args, "--no-live"]
    cmd += ["--json", str(tmp / "summary.json"), "--out", str(tmp / "run.json")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return out


def under_attach(tmp: Path, fault: Fault, traffic: Traffic, traffic_s: float) -> Outcome:
    """`stackprof attach` on a topology made here while traffic runs into the server
    namespace (sockperf's own server, or a plain receiver for crafted datagrams)."""
    with Topology(MTU) as topo, contextlib.ExitStack() as stack:
        lab = Lab(
            topo.client_ns, topo.server_ns, topo.client_ip, topo.server_ip,
            topo.client_if, topo.server_if,
        )  # fmt: skip
        set_reassembly(topo.server_ns, FRAG_TIME)
        if traffic is sockperf_load:
            stack.enter_context(sockperf_server(lab.server_ns, lab.server_ip, PORT))
            stop = None
        else:
            stop = stack.enter_context(receiver(topo.server_ns, topo.server_ip, PORT))
        drop = (
            stack.enter_context(FragmentDrop(topo.server_ns, topo.server_if, *fault))
            if fault
            else None
        )
        metrics = free_port()
        duration = traffic_s + SETTLE_S + 4
        proc = _run_cli(
            ["attach", "--ports", str(PORT), "--netns", f"{topo.client_ns},{topo.server_ns}"]
            + ["--duration", str(duration), "--metrics", f"127.0.0.1:{metrics}"],
            tmp,
        )
        try:
            assert attach_ready(proc, metrics)
            started = time.monotonic()
            app = traffic(lab)
            spent = time.monotonic() - started
            assert spent + SETTLE_S < duration - 2, f"traffic took {spent:.1f} s: budget too tight"
            out = _finish(proc, duration + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if stop is not None:
            app.update(stop())
        dropped = drop.dropped() if drop else 0
        client, server = snmp(topo.client_ns), snmp(topo.server_ns)
    doc = json.loads((tmp / "summary.json").read_text())
    return Outcome(doc, out, client, server, dropped, app)


def _address(netns: str, ifname: str) -> str:
    doc = json.loads(in_netns(netns, "ip", "-j", "-4", "addr", "show", "dev", ifname))
    return str(doc[0]["addr_info"][0]["local"])


def under_trace(
    tmp: Path, fault: Fault, traffic: Traffic | None = None, duration: float = 6, clients: int = 8
) -> Outcome:
    """`stackprof trace` (its own topology, closed-loop clients); its namespaces are set
    up as they appear (ipfrag_time, the fault on the client's veth), and held open so
    their counters are read after the run removed them and the timers ran."""
    proc = _run_cli(
        ["trace", "--mtu", str(MTU), "--duration", str(duration), "--clients", str(clients)]
        + ["--port", str(PORT), "--response-size", str(SIZE)],
        tmp,
    )
    cli, srv = f"sp{proc.pid}-cli", f"sp{proc.pid}-srv"
    cli_if, srv_if = f"sp{proc.pid}c", f"sp{proc.pid}s"
    with contextlib.ExitStack() as stack:
        try:
            # The veth's server end exists once both namespaces are made (mounted).
            ready = lambda: (NETNS_DIR / srv).exists() and _has_link(srv, srv_if)  # noqa: E731
            assert wait_for(lambda: ready() or proc.poll() is not None, 60, 0.005)
            assert proc.poll() is None, _finish(proc, 10)
            held_cli = stack.enter_context(HeldNamespace(cli))
            held_srv = stack.enter_context(HeldNamespace(srv))
            for held in (held_cli, held_srv):
                set_reassembly(held.path, FRAG_TIME)
            drop = FragmentDrop(held_cli.path, cli_if, *fault).install() if fault else None
            app: dict[str, Any] = {}
            if traffic is not None:
                assert wait_for(lambda: port_bound(held_srv.path, PORT), 30), "server"
                lab = Lab(
                    held_cli.path, held_srv.path, _address(held_cli.path, cli_if),
                    _address(held_srv.path, srv_if), cli_if, srv_if,
                )  # fmt: skip
                app = traffic(lab)
            out = _finish(proc, duration + 120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        time.sleep(SETTLE_S)
        dropped = drop.dropped() if drop else 0
        client, server = snmp(held_cli.path), snmp(held_srv.path)
    doc = json.loads((tmp / "summary.json").read_text())
    return Outcome(doc, out, client, server, dropped, app)


def _has_link(netns: str, ifname: str) -> bool:
    try:
        in_netns(netns, "ip", "link", "show", "dev", ifname)
    except subprocess.CalledProcessError:
        return False
    return True


def run_case(
    mode: str, tmp: Path, fault: Fault, traffic: Traffic | None, traffic_s: float
) -> Outcome:
    if mode == "trace":
        return under_trace(tmp, fault, traffic)
    return under_attach(tmp, fault, traffic or sockperf_load, traffic_s)


def lost_path(mode: str) -> tuple[str, str]:
    """The path the fragment drops hit, and the namespace that receives it."""
    return ("response", "client") if mode == "trace" else ("request", "server")


def assert_clean(outcome: Outcome) -> None:
    """Nothing was mis-paired; hardly a flight lost track of (trace's clients race the
    server's last reads and its exit), and hardly one turned away by a full set: a
    datagram held incomplete for the reassembly timeout keeps one way of its set for
    that long, so a live flight and a new one meeting there cost one (about one in
    300,000 datagrams with 20 held)."""
    missed = outcome.doc["missed"]
    for name in ("pair_mismatch", "out_of_range"):
        assert missed[name] == 0, (name, missed)
    sent = sum(int(row["kernel_sent"]) for row in outcome.doc["datagrams"].values())
    for name in ("flights_lost", "flight_full"):
        assert missed[name] <= sent // 10_000, (name, missed)


def figures(outcome: Outcome, path: str, side: str) -> str:
    """stackprof's counts beside the kernel's, one line (shown with pytest -s)."""
    row, kernel = outcome.row(path), getattr(outcome, side)
    ours = {k: v for k, v in row.items() if v and ("dropped" in k or k in LOSS_KEYS)}
    theirs = {k: kernel[k] for k in KERNEL_KEYS if kernel.get(k)}
    return f"{path}: sent {row['kernel_sent']} traced {row['traced']} {ours} | kernel {theirs}"


def assert_losses_match_the_kernel(outcome: Outcome, path: str, side: str) -> None:
    """Incomplete and socket-buffer drops against the receiving namespace's counters."""
    print(figures(outcome, path, side), f"nft {outcome.nft_dropped}")
    kernel = getattr(outcome, side)
    row = outcome.row(path)
    assert within(row["incomplete"], kernel["Ip:ReasmTimeout"]), (row, kernel)
    assert within(row["incomplete"], kernel["Ip:ReasmFails"]), (row, kernel)
    assert within(row["dropped_socket_full"], kernel["Udp:RcvbufErrors"]), (row, kernel)
    accounted = row["traced"] + row["incomplete"] + row["undelivered"] + row["in_transit"]
    accounted += sum(v for k, v in row.items() if k.startswith("dropped_"))
    assert accounted == row["kernel_sent"], row


def assert_shown(outcome: Outcome, path: str) -> None:
    """The screen says what was lost, incomplete first, under its header line."""
    lines = outcome.stdout.splitlines()
    lost = next(line for line in lines if line.startswith("lost: "))
    assert f"{path}: incomplete {outcome.row(path)['incomplete']:,}" in lost
    assert lines.index(lost) < next(i for i, line in enumerate(lines) if " path (µs)" in line)


def assert_clients_timed_out(outcome: Outcome, path: str) -> None:
    """trace: every response lost is a client's timeout (but those near the end, whose
    wait the deadline cut)."""
    if path != "response":
        return
    client = outcome.doc["meta"]["client"]
    row = outcome.row(path)
    lost = row["incomplete"] + sum(v for k, v in row.items() if k.startswith("dropped_"))
    clients = outcome.doc["meta"]["clients"]
    assert lost - clients <= client["timeouts"] <= lost, (client, row)
    assert client["received"] > 0 and client["bad"] == 0


@kernel
@pytest.mark.parametrize("mode", MODES)
def test_random_fragment_loss(mode: str, tmp_path: Path) -> None:
    """2% of all fragments dropped at the receiver's veth (the issue's case)."""
    path, side = lost_path(mode)
    outcome = run_case(mode, tmp_path, ("any", 2, -1), None, 6)
    row = outcome.row(path)
    assert row["incomplete"] > 10, row
    assert_losses_match_the_kernel(outcome, path, side)
    assert within(row["fragments_dropped_netfilter"], outcome.nft_dropped), row
    assert_clients_timed_out(outcome, path)
    assert_clean(outcome)
    assert_shown(outcome, path)


@kernel
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_exactly_one_fragment_lost(mode: str, which: str, tmp_path: Path) -> None:
    """The first, the third or the last fragment of 5% of the datagrams dropped: each
    such datagram is incomplete, once."""
    path, side = lost_path(mode)
    offset = 2 * 1480 if which == "middle" else -1
    outcome = run_case(mode, tmp_path, (which, 5, offset), None, 6)
    row = outcome.row(path)
    assert outcome.nft_dropped > 10
    assert within(row["incomplete"], outcome.nft_dropped), (row, outcome.nft_dropped)
    assert row["fragments_dropped_netfilter"] == outcome.nft_dropped, row
    assert_losses_match_the_kernel(outcome, path, side)
    assert_clients_timed_out(outcome, path)
    assert_clean(outcome)
    assert_shown(outcome, path)


def delivered(outcome: Outcome, mode: str) -> int:
    """Crafted datagrams the receiving application got: attach's receiver counts them;
    trace's server counts them as bad requests (they are not the clients')."""
    if mode == "trace":
        return int(outcome.doc["meta"]["server"]["bad_requests"])
    return int(outcome.app["received"])


def assert_crafted_only(outcome: Outcome, mode: str, count: int) -> None:
    """Every crafted datagram was followed: the only fragmented requests of the run."""
    row = outcome.row("request")
    assert row["kernel_fragmented"] == count, row
    if mode == "attach":
        assert row["kernel_sent"] == count, row


@kernel
@pytest.mark.parametrize("mode", MODES)
def test_fragments_held_past_the_reassembly_timeout(mode: str, tmp_path: Path) -> None:
    """The last fragment of each datagram held back past ipfrag_time: incomplete, once
    each. The kernel counts two timeouts per datagram: the held-back fragment starts a
    reassembly of its own, which times out alone."""
    plan: list[Step] = [step for n in range(N) for step in fragments(n, SIZE)[:-1]]
    plan[-1][4] = FRAG_TIME + 0.5
    plan += [fragments(n, SIZE)[-1] for n in range(N)]
    outcome = run_case(mode, tmp_path, None, crafted(plan), 4)
    print(figures(outcome, "request", "server"))
    row, kernel = outcome.row("request"), outcome.server
    assert_crafted_only(outcome, mode, N)
    assert row["incomplete"] == N, row
    assert kernel["Ip:ReasmTimeout"] == 2 * N and kernel["Ip:ReasmOKs"] == 0, kernel
    assert delivered(outcome, mode) == 0
    assert_clean(outcome)
    assert_shown(outcome, "request")


@kernel
@pytest.mark.parametrize("mode", MODES)
def test_duplicate_fragments_count_once(mode: str, tmp_path: Path) -> None:
    """A middle fragment sent twice before the datagram is whole (the kernel drops the
    copy: DUP_FRAG), or again after it is whole (the copy starts a reassembly that times
    out, which the kernel counts): every datagram delivered and traced once, none
    incomplete, the copies counted as duplicate fragments."""
    plan: list[Step] = []
    for n in range(N):
        f = fragments(n, SIZE)
        plan += [*f[:3], f[2], *f[3:]]
    for n in range(N, 2 * N):
        f = fragments(n, SIZE)
        plan += [*f, f[1]]
    outcome = run_case(mode, tmp_path, None, crafted(plan), 3)
    print(figures(outcome, "request", "server"))
    row, kernel = outcome.row("request"), outcome.server
    assert_crafted_only(outcome, mode, 2 * N)
    assert delivered(outcome, mode) == 2 * N
    assert row["incomplete"] == 0, row
    assert N <= row["fragments_dropped_duplicate"] <= 2 * N, row
    assert kernel["Ip:ReasmOKs"] == 2 * N and kernel["Ip:ReasmTimeout"] == N, kernel
    if mode == "attach":
        assert row["traced"] == 2 * N and outcome.stage_count("request", "total") == 2 * N
        assert outcome.stage_count("request", "backlog") == 2 * N
    assert_clean(outcome)


@kernel
@pytest.mark.parametrize("mode", MODES)
def test_overlapping_fragments(mode: str, tmp_path: Path) -> None:
    """A last fragment that overlaps the one before it: the kernel throws the reassembly
    away (ReasmOverlaps, ReasmFails), with no timeout to say so; each datagram counts
    as incomplete once."""
    plan: list[Step] = []
    for n in range(N):
        f = fragments(n, SIZE)
        _, offset, length, _, _ = f[-1]
        plan += [*f[:-1], [n, offset - 8, length + 8, False, 0]]
    outcome = run_case(mode, tmp_path, None, crafted(plan), 3)
    print(figures(outcome, "request", "server"))
    row, kernel = outcome.row("request"), outcome.server
    assert_crafted_only(outcome, mode, N)
    assert kernel["IpExt:ReasmOverlaps"] == N and kernel["Ip:ReasmFails"] == N, kernel
    assert row["incomplete"] == N, row
    assert delivered(outcome, mode) == 0
    assert_clean(outcome)
    assert_shown(outcome, "request")


@kernel
@pytest.mark.parametrize("mode", MODES)
def test_reordered_fragments_time_correctly(mode: str, tmp_path: Path) -> None:
    """Fragments out of order (all reversed, two middle ones swapped, the last one
    second): every datagram delivered and timed once, from its first packet's send to
    its receive; the train ends when the datagram can be whole, and ip_udp starts there
    (a reversed datagram's last fragment passed before its flight began: no train)."""
    plan: list[Step] = []
    for n in range(3 * N):
        f = fragments(n, SIZE)
        orders = (f[::-1], [f[0], f[2], f[1], *f[3:]], [f[0], f[-1], *f[1:-1]])
        plan += orders[n % 3]
    outcome = run_case(mode, tmp_path, None, crafted(plan), 3)
    print(figures(outcome, "request", "server"))
    row, kernel = outcome.row("request"), outcome.server
    assert_crafted_only(outcome, mode, 3 * N)
    assert kernel["Ip:ReasmOKs"] == 3 * N and kernel["Ip:ReasmFails"] == 0, kernel
    assert delivered(outcome, mode) == 3 * N
    assert row["incomplete"] == 0, row
    assert outcome.stage_count("request", "frag_train") == 2 * N
    if mode == "attach":
        assert row["traced"] == 3 * N
        for stage in ("send", "backlog", "ip_udp", "sock_wait", "recv", "total"):
            assert outcome.stage_count("request", stage) == 3 * N, stage
        stages = {s["stage"]: s for s in outcome.doc["stages"] if s["path"] == "request"}
        assert stages["ip_udp"]["max_us"] < 10_000 and stages["frag_train"]["max_us"] < 10_000
        assert stages["total"]["p50_us"] >= stages["ip_udp"]["p50_us"]
    assert outcome.doc["missed"]["key_reused"] == 0
    assert_clean(outcome)


def _text(renderable: Any) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _lossy_run() -> Run:
    """The issue's attach run as the collector records it."""
    request = {"sent": 12002, "traced": 10300, "incomplete": 1367, "kernel_sent": 12002}
    request |= {"dropped_socket_full": 335, "fragments_dropped_netfilter": 1431}
    return Run(meta={"transport": "attach"}, datagrams={"request": request, "response": {}})


def test_views_say_what_was_lost_and_why() -> None:
    """Under the header on screen, under the datagram table in a report, in the JSON."""
    run = _lossy_run()
    want = (
        "lost: request: incomplete 1,367 · socket buffer full 335"
        " (fragments dropped: netfilter 1,431)"
    )
    screen = _text(render(run, {}, compact=True)).splitlines()
    assert screen[1] == want
    report = _text(render_report(run)).splitlines()
    assert report.index(want) > next(i for i, line in enumerate(report) if "dropped_socket" in line)
    row = run.summary()["datagrams"]["request"]
    assert (row["incomplete"], row["dropped_socket_full"]) == (1367, 335)
    assert _text(render(Run(), {})).splitlines()[1] == "lost: none"


def test_compare_lines_up_the_losses() -> None:
    clean = Run(datagrams={"request": {"sent": 12002, "traced": 12002}, "response": {}})
    rows = {
        tuple(line.split()[:2] + line.split()[-3:])
        for line in _text(render_compare(clean, _lossy_run())).splitlines()
        if line.strip().startswith("request ")
    }
    assert ("request", "incomplete", "0", "1,367", "+1,367") in rows
    assert ("request", "socket", "0", "335", "+335") in rows
    assert "datagrams lost: none in either run" in _text(render_compare(clean, clean))
