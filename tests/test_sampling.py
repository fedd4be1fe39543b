"""--sample N: the kernel follows the datagrams profiler.sampling says it does, at every
hook alike, with the sent counters exact; --sample 1 is a run without sampling.

Real BPF on a real veth pair: a fixed workload (fragmented datagrams, DF ones of fresh
unconnected sockets, DF ones of a connected socket) under the Tracer, and the lab and a
workload stackprof did not start under ``trace`` and ``attach``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flight_keys import IPv4UDP, flight_key, header_sampled, key_tuple, parse_ipv4_udp

from profiler.collector import collect, live_flights
from profiler.export import export
from profiler.hooks import stages_for
from profiler.loader import Tracer, choose_hooks, make_config
from profiler.merge import MergeError, merge
from profiler.run import Run
from profiler.sampling import is_sampled, key_hash, key_sampled
from profiler.views.tables import header_line
from servers.topology import Topology
from servers.workload import Workload

FIXTURE = Path(__file__).resolve().parent.parent / "traces" / "fixtures" / "udp-mtu1500-cpu0.json"

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: BPF and network namespaces")

PORT = 9998
DATAGRAMS = 48  # a third of each kind
COARSE = ("send", "qdisc", "driver", "backlog", "ip_udp", "sock_wait", "recv", "total")

CAPTURE = """
import socket, sys
want, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(5)
print("ready", flush=True)
seen = 0
while seen < want:
    pkt = s.recv(65535)
    ihl = (pkt[0] & 15) * 4
    first = int.from_bytes(pkt[6:8], "big") & 0x1FFF == 0
    if pkt[9] == 17 and first and int.from_bytes(pkt[ihl + 2:ihl + 4], "big") == port:
        print(pkt[:28].hex(), flush=True)
        seen += 1
"""
RECEIVE = """
import socket, sys
want, port, read = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "read"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: keep every datagram queued
s.bind(("0.0.0.0", port))
s.settimeout(10)
print("ready", flush=True)
got = 0
while read and got < want:
    s.recv(65535)
    got += 1
print(got, flush=True)
sys.stdin.read()
"""
SEND = """
import socket, sys, time
server, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loose = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tied.connect((server, port))
for i in range(count):
    kind = i % 3
    if kind == 0:  # fragmented: an IP ID of its own
        loose.sendto(b"f" * 4000, (server, port))
    elif kind == 1:  # DF, IP ID 0: told apart by a fresh source port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
            fresh.sendto(b"w" * 100, (server, port))
    else:  # DF on a connected socket: its IP IDs count up
        tied.send(b"c" * 100)
    time.sleep(0.002)
"""


def in_netns(ns: str, script: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None, text=True
    )


@dataclass
class Traced:
    """What the kernel made of the fixed workload: the run, the first packet of each
    datagram as captured at the receiver, and the keys left in the flight table."""

    run: Run
    headers: list[IPv4UDP]
    in_kernel: set[tuple[int, ...]]

    def counts(self, path: str = "request") -> dict[str, int]:
        return {
            stage: int(hist.get_total_count())
            for (p, stage), hist in self.run.stages.items()
            if p == path and hist.get_total_count()
        }


def fixed_workload(sample: int | None, read: bool) -> Traced:
    """DATAGRAMS requests sent one by one at MTU 1500 under the tracer (sample None: the
    config as before sampling existed); the receiver reads them all, or none (their
    flights then stay in the table, to be compared key by key)."""
    with Topology(1500) as topo:
        netns = list(topo.netns_inodes())
        config = make_config(
            PORT, PORT, netns=netns, **({} if sample is None else {"sample": sample})
        )
        with Tracer(config, choose_hooks()) as tracer:
            capture = in_netns(topo.server_ns, CAPTURE, str(DATAGRAMS), str(PORT))
            mode = "read" if read else "hold"
            receiver = in_netns(
                topo.server_ns, RECEIVE, str(DATAGRAMS), str(PORT), mode, stdin=True
            )
            for proc in (capture, receiver):
                assert proc.stdout and proc.stdout.readline().strip() == "ready"
            sender = in_netns(topo.client_ns, SEND, topo.server_ip, str(PORT), str(DATAGRAMS))
            assert sender.wait(timeout=30) == 0
            out, _ = capture.communicate(timeout=15)
            assert receiver.stdout
            received = int(receiver.stdout.readline())
            time.sleep(0.2)
            run = collect(tracer, Run(meta={"transport": "udp"}), older_than_ns=0)
            in_kernel = {key_tuple(slot.key) for slot in live_flights(tracer)}
            receiver.communicate(timeout=5)
    assert received == (DATAGRAMS if read else 0)
    headers = [parse_ipv4_udp(bytes.fromhex(line)) for line in out.split()]
    assert len(headers) == DATAGRAMS
    assert sum(h.fragmented for h in headers) == DATAGRAMS // 3
    return Traced(run, headers, in_kernel)


def test_the_hash_is_the_kernels_mix_of_wire_order_fields() -> None:
    """Pure: every datagram at 1 in 1; about 1 in N otherwise, for keys differing only
    in the IP ID; a stored key hashes as its header does."""
    assert all(
        is_sampled(key_hash(1, 2, i, 17, True, 0, 0), every) for i in range(50) for every in (0, 1)
    )
    hits = sum(
        is_sampled(key_hash(0x0AD50102, 0x0AD50101, i, 17, True, 0, 0), 4) for i in range(4000)
    )
    assert 850 <= hits <= 1150
    fragment = "45000fb4abcd2000401100000ad501020ad50101c35a270e0fa00000"
    whole = "4500008000004000401100000ad501020ad50101c35a270e006c0000"
    for packet in (fragment, whole):
        header = parse_ipv4_udp(bytes.fromhex(packet))
        for every in range(1, 40):
            assert key_sampled(flight_key(header), every) == header_sampled(header, every)


def test_the_rate_shows_in_the_header_and_every_export(tmp_path: Path) -> None:
    run = Run.load(FIXTURE)
    assert run.sample == 1 and "datagrams followed" not in header_line(run.meta).plain
    run.meta["sample"] = 16
    assert "1 in 16 datagrams followed" in header_line(run.meta).plain
    csv = export(run, tmp_path / "run.csv").read_text().splitlines()
    assert csv[0].endswith(",sample") and all(line.endswith(",16") for line in csv[1:])
    assert json.loads(export(run, tmp_path / "run.json").read_text())["meta"]["sample"] == 16
    parquet = export(run, tmp_path / "run.parquet")
    assert set(pd.read_parquet(parquet)["sample"]) == {16}
    assert 'sample="16"' in export(run, tmp_path / "run.prom").read_text()
    assert '"sample": 16' in export(run, tmp_path / "run.hlog").read_text()


def test_runs_of_other_rates_do_not_merge() -> None:
    a, b = Run.load(FIXTURE), Run.load(FIXTURE)
    b.meta["sample"] = 4
    with pytest.raises(MergeError, match="1 datagram in 4"):
        merge([a, b], ["a", "b"])
    b.meta["sample"] = 1
    assert merge([a, b]).sample == 1


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("sample", [3, 4])
def test_kernel_follows_the_datagrams_python_picks(sample: int) -> None:
    """Key by key: the flights the kernel started are exactly those of the datagrams
    profiler.sampling picks; the others were counted sent and sampled out."""
    traced = fixed_workload(sample, read=False)
    picked = {key_tuple(flight_key(h)) for h in traced.headers if header_sampled(h, sample)}
    assert 0 < len(picked) < DATAGRAMS
    assert traced.in_kernel == picked
    row = traced.run.datagrams["request"]
    assert row["kernel_sent"] == DATAGRAMS
    assert row["kernel_sampled_out"] == DATAGRAMS - len(picked)
    assert traced.run.missed["flights_lost"] == 0


@pytest.fixture(scope="module")
def unsampled() -> Traced:
    return fixed_workload(None, read=True)


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("sample", [1, 4])
def test_every_hook_follows_the_same_datagrams(sample: int, unsampled: Traced) -> None:
    """The fixed workload read to the end: at 1 in 1 the same stages and counts as a run
    without sampling; at 1 in 4 every stage counts the followed datagrams, which are
    the ones profiler.sampling picks, and sent stays the full count."""
    traced = fixed_workload(sample, read=True)
    counts, row = traced.counts(), traced.run.datagrams["request"]
    picked = sum(header_sampled(h, sample) for h in traced.headers)
    fragmented = sum(header_sampled(h, sample) for h in traced.headers if h.fragmented)
    assert row["kernel_sent"] == DATAGRAMS
    assert row["kernel_sampled_out"] == DATAGRAMS - picked
    assert row["kernel_delivered"] == picked
    assert {s: counts.get(s, 0) for s in COARSE} == dict.fromkeys(COARSE, picked), counts
    assert counts.get("frag_train", 0) == fragmented
    if sample == 1:
        assert counts == unsampled.counts()
        assert traced.run.datagrams == unsampled.run.datagrams
        assert picked == DATAGRAMS


def _within_binomial(followed: int, sent: int, every: int) -> bool:
    """followed is a plausible count of a 1-in-every draw from sent (6 standard deviations)."""
    p = 1.0 / every
    return abs(followed - sent * p) <= 6 * math.sqrt(sent * p * (1 - p)) + 1


def check_sampled_doc(doc: dict[str, Any], every: int, clients: int, cut: int = 0) -> None:
    """A --sample run's summary: every coarse stage counts the followed datagrams, about
    1 in ``every`` of the sent ones, whose count stays the full one. ``cut``: how many
    datagrams a run that stops amid traffic may leave between two hooks."""
    assert doc["meta"]["sample"] == every
    stages = {(r["path"], r["stage"]): r["count"] for r in doc["stages"]}
    for path in ("request", "response"):
        row = doc["datagrams"][path]
        sent, followed = row["kernel_sent"], row["kernel_sent"] - row["kernel_sampled_out"]
        assert sent > 400, (path, row)
        assert _within_binomial(followed, sent, every), (path, followed, sent)
        assert stages[path, "send"] == followed, (path, stages)
        for name in ("qdisc", "driver", "backlog"):
            assert 0 <= followed - stages[path, name] <= cut, (path, name, stages)
        total = stages[path, "total"]
        assert stages[path, "sock_wait"] == stages[path, "recv"] == total == row["traced"]
        assert stages[path, "ip_udp"] + row["kernel_enqueue_unseen"] >= total
        assert followed - total <= clients + 0.01 * followed
    response = doc["datagrams"]["response"]
    followed = response["kernel_sent"] - response["kernel_sampled_out"]
    assert 0 <= followed - stages["response", "frag_train"] <= cut  # 8 KiB at MTU 1500
    assert doc["missed"]["flights_lost"] <= 0.01 * followed


def stackprof(tmp: Path, *args: str) -> dict[str, Any]:
    out = tmp / "summary.json"
    cmd = [sys.executable, "-m", "profiler", *args, "--no-live"]
    cmd += ["--json", str(out), "--out", str(tmp / "run.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


@pytest.mark.root
@needs_root
def test_trace_sample_4(tmp_path: Path) -> None:
    clients = 4
    doc = stackprof(
        tmp_path, "trace", "--mtu", "1500", "--duration", "3", "--clients", str(clients),
        "--sample", "4",
    )  # fmt: skip
    check_sampled_doc(doc, 4, clients)
    assert doc["meta"]["stages"] == list(stages_for("udp"))
    for path in ("request", "response"):
        client = doc["meta"]["client"]["sent" if path == "request" else "received"]
        assert abs(doc["datagrams"][path]["kernel_sent"] - client) <= 0.01 * client + clients
    prom = tmp_path / "run.prom"
    cmd = [sys.executable, "-m", "profiler", "export", str(tmp_path / "run.json"), str(prom)]
    exported = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    assert 'sample="4"' in prom.read_text()


@pytest.fixture(scope="module")
def workload() -> Iterator[Workload]:
    with Topology(1500) as topo, Workload(topo, clients=2, duration=30, port=7000) as load:
        yield load


@pytest.mark.root
@needs_root
def test_attach_sample_4(workload: Workload, tmp_path: Path) -> None:
    topo = workload.topology
    doc = stackprof(
        tmp_path, "attach", "--ports", "7000", "--duration", "3",
        "--netns", f"{topo.client_ns},{topo.server_ns}", "--sample", "4",
    )  # fmt: skip
    check_sampled_doc(doc, 4, 2, cut=2)
