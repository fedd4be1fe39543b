"""Diagnosis sentences (profiler/diagnose.py) checked against the numbers of the runs they
describe: synthetic runs with known stage medians, fragments, throughput, RTT and CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures_runs import hist_of

from profiler import diagnose
from profiler.run import Run

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "traces" / "fixtures"
STAGES = ["total", "send", "qdisc", "driver", "backlog", "frag_train", "ip_udp", "sock_wait"]
STAGES += ["recv", "fragment", "reassembly"]


def mtu_run(mtu: int, stage_ns: dict[str, int], frags: int, rate: float, **kw: Any) -> Run:
    """A run whose response stages have the given medians (ns), frags per response,
    clients' rate over 2 s, and server CPU."""
    seconds = 2.0
    received = int(rate * seconds)
    meta = {
        "transport": "udp",
        "mtu": mtu,
        "clients": 16,
        "stages": STAGES,
        "unobserved": ["fragment", "reassembly"],
        "client": {"received": received, "duration_s": seconds, "bad": 0},
        "server": {
            "cpu_s": kw.get("cpu_s", 1.0),
            "requests": received,
            "responses": received,
            "bytes_sent": received * 8232,
        },
    }
    return Run(
        meta=meta,
        stages={("response", s): hist_of({ns: 100}) for s, ns in stage_ns.items()},
        frags={"response": hist_of({frags: 50})},
        client_rtt=hist_of({kw.get("rtt_ns", 500_000): 100}),
    )


SMALL = {"total": 90_000, "send": 9_000, "qdisc": 1_000, "driver": 500, "backlog": 500}
SMALL |= {"frag_train": 6_000, "ip_udp": 4_000, "sock_wait": 60_000, "recv": 2_000}
LARGE = {"total": 40_000, "send": 4_000, "qdisc": 1_000, "driver": 500, "backlog": 500}
LARGE |= {"ip_udp": 2_000, "sock_wait": 25_000, "recv": 2_000}


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"-?[\d,]*\.?\d+", text)]


def test_kernel_path_leaves_the_waits_out() -> None:
    run = mtu_run(1500, SMALL, 6, 8000)
    assert diagnose.kernel_path_us(run) == pytest.approx(9 + 1 + 0.5 + 0.5 + 6 + 4 + 2, abs=0.05)


def test_mtu_pair_sentences_carry_the_runs_numbers() -> None:
    a = mtu_run(1500, SMALL, 6, 8000, cpu_s=1.2, rtt_ns=800_000)
    b = mtu_run(9000, LARGE, 1, 10000, cpu_s=1.0, rtt_ns=500_000)
    doc = diagnose.diagnose_pair(a, b, ("udp MTU 1500", "udp MTU 9000"))
    first, kernel, cpu, load, saving = doc["sentences"]
    assert "8,232-byte response is 6 fragments at udp MTU 1500 and 1 at udp MTU 9000" in first
    assert doc["kernel_path_us"] == pytest.approx([23.0, 10.0], abs=0.05)  # HDR's precision
    assert "costs 13.0 µs more at udp MTU 1500" in kernel
    assert "fragmenting +5.0 µs (send)" in kernel
    assert "fragment train +6.0 µs (frag_train)" in kernel
    assert "reassembly +2.0 µs (ip_udp)" in kernel
    assert doc["server_cpu_us"] == [75.0, 50.0] and doc["server_cpu_pct"] == [60.0, 50.0]
    assert "75.0 µs at udp MTU 1500 (60.0% of a CPU) vs 50.0 µs" in cpu
    assert "8,000 requests/s at RTT p50 800 µs" in load and "10,000/s at 500 µs" in load
    assert "within the runs' noise" not in load
    # 13 µs a response at 8,000 responses/s = 104 ms of CPU a second
    assert doc["saving"]["by"] == "udp MTU 9000"
    assert doc["saving"]["us_per_response"] == pytest.approx(13.0, abs=0.05)
    assert doc["saving"]["cpu_ms_per_s"] == pytest.approx(104.0, abs=0.5)
    assert "udp MTU 9000 would save about 13.0 µs" in saving
    assert f"{doc['saving']['cpu_ms_per_s']:,.1f} ms per second" in saving


def test_noise_larger_than_the_difference_is_said_instead() -> None:
    """Repeats spread 50% in throughput: a 5% difference cannot be told."""
    a1 = mtu_run(1500, SMALL, 6, 8000)
    a2 = mtu_run(1500, SMALL, 6, 12000)
    b1 = mtu_run(9000, SMALL, 1, 8400)
    b2 = mtu_run(9000, SMALL, 1, 8500)
    doc = diagnose.diagnose_pair(a1, b1, ("A", "B"), ([a1, a2], [b1, b2]))
    assert doc["noise"]["requests_per_s"] == 0.4  # (12000 - 8000) / median 10000
    load = next(s for s in doc["sentences"] if s.startswith("At 16 clients"))
    assert "too large to tell which is faster" in load and "±40%" in load
    kernel = doc["sentences"][1]
    assert "too small to tell" in kernel, "the same stages: no kernel difference to call"
    assert doc["saving"] is None


def test_single_runs_do_not_call_small_differences() -> None:
    a = mtu_run(1500, SMALL, 6, 8000)
    b = mtu_run(9000, SMALL, 1, 8300)  # 3.6% apart, under the 10% single-run bar
    load = next(s for s in diagnose.diagnose_pair(a, b, ("A", "B"))["sentences"] if "serves" in s)
    assert "too large to tell" in load


def test_sweep_diagnoses_pair_mtus_at_the_largest_common_clients() -> None:
    runs = {
        "a4": mtu_run(1500, SMALL, 6, 8000),
        "b4": mtu_run(9000, LARGE, 1, 9000),
        "a1": mtu_run(1500, SMALL, 6, 1000),
    }
    rows = [
        {"transport": "udp", "mtu": 1500, "clients": 4, "file": "a4"},
        {"transport": "udp", "mtu": 9000, "clients": 4, "file": "b4"},
        {"transport": "udp", "mtu": 1500, "clients": 1, "file": "a1"},
        {"transport": "udp", "mtu": 9000, "clients": 1, "error": "failed", "file": None},
    ]
    (doc,) = diagnose.sweep_diagnoses(rows, runs.__getitem__)
    assert (doc["a"], doc["b"]) == ("udp MTU 1500", "udp MTU 9000")
    assert doc["requests_per_s"] == [8000.0, 9000.0]
    assert numbers(doc["sentences"][0])[:3] == [8232.0, 6.0, 1500.0]


def test_compare_ends_with_the_diagnosis(tmp_path: Path) -> None:
    """`stackprof compare A B` of two saved runs (MTU 1500 vs 9000) prints the sentences
    and writes them, with their numbers, as JSON."""
    a, b = FIXTURES / "udp-mtu1500-cpu0.json", FIXTURES / "udp-mtu9000-cpu0.json"
    out = tmp_path / "cmp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "compare", str(a), str(b), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())["diagnosis"]
    assert (doc["a"], doc["b"]) == ("MTU 1500", "MTU 9000")
    screen = " ".join(proc.stdout.split())
    assert screen.index("diagnosis") > screen.index("fragments per datagram")
    for sentence in doc["sentences"]:
        assert " ".join(sentence.split()) in screen
    runs = Run.load(a), Run.load(b)
    assert doc["fragments"] == [diagnose.fragments(r) for r in runs]
    assert doc["kernel_path_us"] == [diagnose.kernel_path_us(r) for r in runs]
