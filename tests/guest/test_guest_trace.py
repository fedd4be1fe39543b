"""`stackprof trace` in Debian's stock 6.1 kernel, on fentry/fexit, on kprobes, and without both.

The host kernel has neither kprobes nor BPF trampolines, so the fine hook points (frag_tx,
defrag_done, udp_rcv, udp_enqueue) and, on 6.1 (no sock:sk_data_ready nor sock:sock_recv_length
tracepoints), the required sk_enqueue and recv_return are only ever exercised here. One boot runs
the three traces, each writing its JSON, stdout, stderr and exit code to the rwdir; each test
asserts one thing about them. Expected counts come from each run's own counters.

Python in the guest is ~13x slower than on the host: a trace costs ~80 s there, half of it after
its workload ended (summaries, saving). The traced runs go one after the other (their servers
must answer within 10 s of starting, which a busy guest misses); the refused run has no
workload, so it starts once the kprobe run's topology is gone and overlaps its bookkeeping.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.hooks import BY_NAME, PARENT, stages_for

from .conftest import make_bpf_object
from .vm import REPO, GuestConfig, GuestResult, run_in_guest

pytestmark = pytest.mark.guest

MTU = 1500
RESPONSE_SIZE = 8192
CLIENTS = 2
IP_HEADER, UDP_HEADER = 20, 8
FINE_POINTS = (
    "frag_tx",
    "neigh_out",
    "ip_in",
    "local_in",
    "defrag_done",
    "udp_rcv",
    "udp_enqueue",
)
# Required, and on 6.1 hooked only by fentry/fexit or kprobes.
SOCKET_POINTS = ("sk_enqueue", "recv_return")
# The finer stages of a UDP run (udp_ip_tx, fragment, neigh_tx, ip_rx, reassembly, ...).
FINE_STAGES = tuple(s for s in stages_for("udp") if s in PARENT)
COARSE_POINTS = ("dev_queue", "dev_xmit", "dev_rx", "stack_rx")
PATHS = ("request", "response")

KPROBES = "kprobe,tp_btf,raw_tp,tracepoint"
NO_FINE_KINDS = "tp_btf,raw_tp,tracepoint"
RUNS = ("fentry", "kprobe", "nofine", "skipfine")

GUEST_SCRIPT = r"""
modprobe veth || exit 3
common="--mtu MTU --response-size RESPONSE_SIZE --duration 3 --clients CLIENTS --no-live"
start() {  # name, options: a trace in the background ($! is its pid, the namespaces' owner)
  name=$1; shift
  echo "$name start $(date +%s)" >> "$OUT/times"
  "$SP" trace $common --json "$OUT/$name.json" --out "$OUT/$name.run.json" "$@" \
    > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" &
}
handoff() {  # until trace $1's topology is gone (its workload is over) or it exited
  seen=0
  while kill -0 "$1" 2>/dev/null; do
    if [ -e "/run/netns/sp$1-cli" ]; then seen=1; elif [ "$seen" = 1 ]; then return; fi
    sleep 1
  done
}
finish() {  # name, pid
  wait "$2"; echo $? > "$OUT/$1.rc"
  echo "$1 end $(date +%s)" >> "$OUT/times"
}
start fentry; finish fentry $!
start kprobe --hooks KPROBES; kprobe=$!
handoff $kprobe
start nofine --hooks NO_FINE_KINDS; nofine=$!
finish kprobe $kprobe
finish nofine $nofine
start skipfine --skip SKIPPED; finish skipfine $!
"""


def _guest_script() -> str:
    return (
        GUEST_SCRIPT.replace("RESPONSE_SIZE", str(RESPONSE_SIZE))
        .replace("MTU", str(MTU))
        .replace("CLIENTS", str(CLIENTS))
        .replace("NO_FINE_KINDS", NO_FINE_KINDS)
        .replace("KPROBES", KPROBES)
        .replace("SKIPPED", ",".join(FINE_POINTS))
    )


class Trace:
    """One `stackprof trace` run in the guest: exit code, output, and its JSON if any."""

    def __init__(self, outdir: Path, name: str) -> None:
        self.name = name
        rc = outdir / f"{name}.rc"
        self.rc = int(rc.read_text()) if rc.is_file() else None
        self.stdout = _text(outdir / f"{name}.stdout")
        self.stderr = _text(outdir / f"{name}.stderr")
        doc = outdir / f"{name}.json"
        self.doc: dict[str, Any] | None = json.loads(doc.read_text()) if doc.is_file() else None

    def summary(self) -> dict[str, Any]:
        """The JSON document; fails with the run's output when there is none."""
        assert self.rc == 0 and self.doc is not None, (
            f"{self.name}: rc {self.rc}\n{self.stderr[-3000:]}"
        )
        return self.doc

    def stage(self, path: str, name: str) -> dict[str, Any]:
        return next(r for r in self.summary()["stages"] if r["path"] == path and r["stage"] == name)

    def count(self, path: str, name: str) -> int:
        return int(self.stage(path, name)["count"])


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@pytest.fixture(scope="module")
def traces(guest_config: GuestConfig) -> Iterator[dict[str, Trace]]:
    make_bpf_object("stackprof")
    outdir = Path(tempfile.mkdtemp(prefix="stackprof-guest-trace-", dir="/tmp"))
    try:
        (outdir / "trace.sh").write_text(_guest_script())
        res: GuestResult = run_in_guest(
            f"sh {outdir}/trace.sh",
            timeout=600,  # four traces, ~100 s each under emulation
            outdir=outdir,
            env={"OUT": str(outdir), "SP": str(REPO / ".venv" / "bin" / "stackprof")},
            config=guest_config,
        )
        times = _text(outdir / "times").split()
        print(f"guest traces: rc {res.returncode}, {res.seconds:.1f} s wall; {' '.join(times)}")
        if res.returncode != 0:
            pytest.fail(f"guest script rc {res.returncode}:\n{res.stderr}\n{res.console[-3000:]}")
        yield {name: Trace(outdir, name) for name in RUNS}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def _label(point: str, kind: str) -> str:
    """The catalogue's label for a hook point's candidate of this kind that 6.1 can load:
    it has no bpf_rdonly_cast (6.2), so the cast programs fall back to the plain ones."""
    return next(
        c.label for c in BY_NAME[point].candidates if c.kind == kind and c.variant != "rdonly_cast"
    )


def _fragments(size: int) -> int:
    """IPv4 fragments of a UDP datagram of size payload bytes at MTU."""
    per_fragment = (MTU - IP_HEADER) // 8 * 8
    return math.ceil((size + UDP_HEADER) / per_fragment)


@pytest.mark.parametrize("name,kind", [("fentry", "fentry"), ("kprobe", "kprobe")])
def test_fine_and_socket_points_use_the_kind(
    traces: dict[str, Trace], name: str, kind: str
) -> None:
    """Default kinds pick fentry/fexit; forced kprobes pick kprobe/kretprobe; the device
    boundaries stay on tp_btf (they have no function hook)."""
    doc = traces[name].summary()
    hooks = doc["meta"]["hooks"]
    assert doc["meta"]["kernel"].startswith("6.1"), doc["meta"]["kernel"]
    for point in FINE_POINTS + SOCKET_POINTS:
        assert hooks[point] == _label(point, kind), (point, hooks[point])
    for point in COARSE_POINTS:
        assert hooks[point] == _label(point, "tp_btf"), (point, hooks[point])
    assert doc["meta"]["unobserved"] == [], doc["meta"]["unobserved"]


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_workload_ran_clean(traces: dict[str, Trace], name: str) -> None:
    doc = traces[name].summary()
    client = doc["meta"]["client"]
    assert client["bad"] == 0, client
    assert client["received"] > 100, client
    assert doc["missed"]["pair_mismatch"] == 0, doc["missed"]
    assert doc["missed"]["flight_full"] == 0, doc["missed"]
    for path in PATHS:
        row = doc["datagrams"][path]
        assert row["incomplete"] == 0 and row["kernel_enqueue_drops"] == 0, (path, row)


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_fragments_per_datagram(traces: dict[str, Trace], name: str) -> None:
    doc = traces[name].summary()
    meta = doc["meta"]
    response = doc["datagrams"]["response"]
    assert response["fragments_per_datagram"] == _fragments(meta["response_size"]) == 6
    assert doc["datagrams"]["request"]["fragments_per_datagram"] == _fragments(meta["request_size"])
    assert response["kernel_fragmented"] == response["kernel_sent"] > 0, response


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_send_side_fine_stages_count_every_fragmented_send(
    traces: dict[str, Trace], name: str
) -> None:
    """fragment is recorded once per datagram that went through ip_do_fragment (the
    fragmented ones, none of the requests); udp_ip_tx and neigh_tx once per datagram
    sent, split at ip_do_fragment or, unfragmented, at ip_finish_output2."""
    run = traces[name]
    for path in PATHS:
        row = run.summary()["datagrams"][path]
        assert run.count(path, "fragment") == row["kernel_fragmented"], path
        assert run.count(path, "udp_ip_tx") == row["kernel_sent"], path
        assert run.count(path, "neigh_tx") == row["kernel_sent"], path
    assert run.count("response", "fragment") > 0


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_reassembly_counts_every_fragmented_datagram(traces: dict[str, Trace], name: str) -> None:
    """Each fragmented datagram is reassembled once, its time split at ip_defrag's entry
    into ip_rx and reassembly (the last ones may still be in flight when the clients stop:
    at most one per client)."""
    run = traces[name]
    for path in PATHS:
        row = run.summary()["datagrams"][path]
        defragged = row["kernel_defrag_local"] + row["kernel_defrag_netfilter"]
        reassembled = run.count(path, "reassembly")
        assert row["kernel_fragmented"] - CLIENTS <= reassembled <= defragged, (path, row)
        assert defragged <= row["kernel_fragmented"], (path, row)
        assert run.count(path, "ip_rx") == reassembled, path
    assert run.count("response", "reassembly") > 0


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_receive_side_fine_stages_count_every_datagram(traces: dict[str, Trace], name: str) -> None:
    """ip_local once per datagram reaching udp_rcv, udp_rcv once per enqueue, and each
    datagram enqueued once (two CPUs can find one at a socket's tail: the server's)."""
    run = traces[name]
    for path in PATHS:
        row = run.summary()["datagrams"][path]
        sent, enqueued = row["kernel_sent"], row["kernel_enqueued"]
        ip_local, udp_rcv = run.count(path, "ip_local"), run.count(path, "udp_rcv")
        assert sent - CLIENTS <= ip_local <= sent, (path, ip_local, row)
        assert enqueued - CLIENTS <= udp_rcv <= enqueued, (path, udp_rcv, row)
        assert sent - CLIENTS <= enqueued <= sent, (path, row)


@pytest.mark.parametrize("name", ["fentry", "kprobe"])
def test_totals_match_traced_and_clients(traces: dict[str, Trace], name: str) -> None:
    """Every datagram sent is followed to its receive, but those in flight at the end."""
    run = traces[name]
    doc = run.summary()
    client = doc["meta"]["client"]
    for path in PATHS:
        row = doc["datagrams"][path]
        assert run.count(path, "total") == row["traced"], (path, row)
        assert row["kernel_sent"] - CLIENTS <= row["traced"] <= row["kernel_sent"], (path, row)
    requests, responses = doc["datagrams"]["request"], doc["datagrams"]["response"]
    assert client["sent"] - CLIENTS <= requests["traced"] <= client["sent"], (client, requests)
    assert abs(responses["traced"] - client["received"]) <= CLIENTS, (client, responses)


def test_no_fine_kinds_refuses_with_one_line(traces: dict[str, Trace]) -> None:
    """Without fentry and kprobes, 6.1 has no hook for the socket points: exit 1, one line
    naming them, no traceback, nothing written."""
    run = traces["nofine"]
    assert run.rc == 1, (run.rc, run.stderr[-3000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr[-3000:]
    assert lines[0].startswith(
        f"stackprof: cannot trace: no working hook for {', '.join(SOCKET_POINTS)} "
    ), lines[0]
    assert run.doc is None


def test_ip_receive_stages_count_every_datagram(traces: dict[str, Trace]) -> None:
    """ip_rcv and ip_route once per datagram completed at IP (its last fragment or
    itself), the last few in flight when the clients stop aside."""
    run = traces["fentry"]
    for path in PATHS:
        sent = run.summary()["datagrams"][path]["kernel_sent"]
        for stage in ("ip_rcv", "ip_route"):
            assert sent - CLIENTS <= run.count(path, stage) <= sent, (path, stage)


def test_fine_points_skipped_fall_back_to_the_coarse_stages(traces: dict[str, Trace]) -> None:
    """With the fine points left unhooked, the finer stages are reported unobserved, the
    device boundaries stay on tracepoints and the coarse stages still add up."""
    doc = traces["skipfine"].summary()
    hooks = doc["meta"]["hooks"]
    assert all(hooks[point] is None for point in FINE_POINTS), hooks
    assert all(hooks[point] == _label(point, "tp_btf") for point in COARSE_POINTS), hooks
    assert set(doc["meta"]["unobserved"]) == set(FINE_STAGES), doc["meta"]["unobserved"]
    for path in PATHS:
        row = doc["datagrams"][path]
        assert row["kernel_sent"] - CLIENTS <= row["traced"] <= row["kernel_sent"], (path, row)
        for stage in FINE_STAGES:
            assert traces["skipfine"].count(path, stage) == 0, (path, stage)
