"""benchmarks/overhead.py: its shortest run (root) gives every configuration, positive
figures, verdicts from the allowed set and none's rows from sockperf, and leaves nothing
running; its bad arguments, sockperf parsing and verdict rule (no root).

No timing is asserted: on a shared machine the figures are noise, the shape is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.overhead_configs import CONFIGS, VARIANTS, availability
from benchmarks.overhead_figures import UNAVAILABLE, VERDICTS, latency_verdict
from benchmarks.overhead_load import parse_pingpong, parse_throughput_seconds, parse_udp
from servers.topology import NETNS_DIR

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "overhead.py"
SHORTEST = ["--rounds", "2", "--seconds", "1", "--mtus", "1500", "--cpus", "1"]
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces")
# Which configuration each target needs (its verdict is unavailable without it).
TARGET_CONFIGS = {
    "sample16 added p50 vs empty's": "sample16",
    "lean events per fragmented datagram": "lean",
    "lean added p50 vs full's": "lean",
}

PINGPONG = """sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=50805
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=31605; ReceivedMessages=31605
sockperf: \x1b[2;35m====> avg-latency=8.678 (std-dev=4.097)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: ---> percentile 99.000 =   21.911
sockperf: ---> percentile 50.000 =    7.603
"""


@pytest.fixture(scope="module")
def shortest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with the shortest settings that still measure none's spread (two rounds)."""
    out = tmp_path_factory.mktemp("overhead") / "overhead.json"
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), *SHORTEST, "--json", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        stdout, stderr = proc.communicate(timeout=900)
    print(stdout)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    leftovers = [n for n in os.listdir(NETNS_DIR) if n.startswith(f"sp{proc.pid}-")]
    assert not leftovers, leftovers
    doc: dict[str, Any] = json.loads(out.read_text())
    doc["_stdout"] = stdout
    return doc


def _measured(doc: dict[str, Any]) -> list[str]:
    return [c for c, s in doc["configs"].items() if s["status"] == "measured"]


@root
@pytest.mark.root
def test_every_configuration_is_there(shortest: dict[str, Any]) -> None:
    assert list(shortest["configs"]) == list(CONFIGS)
    measured = _measured(shortest)
    assert {"none", "empty", "clock", "stackprof"} <= set(measured), shortest["configs"]
    for config, state in shortest["configs"].items():
        assert state["status"] == "measured" or state["status"].startswith(UNAVAILABLE), state
        assert config in shortest["_stdout"]
    cell = shortest["summary"]["cells"]["mtu1500-1cpu"]
    assert list(cell["configs"]) == list(CONFIGS)


@root
@pytest.mark.root
def test_none_rows_come_from_sockperf(shortest: dict[str, Any]) -> None:
    rows = [r for r in shortest["runs"] if r["config"] == "none"]
    assert len(rows) == 4, rows  # 2 rounds x (ping-pong, throughput)
    assert shortest["params"]["load_generator"] == "sockperf"
    for row in rows:
        assert row["source"] == "sockperf", row
        if row["kind"] == "pingpong":
            assert 0 < row["p50_us"] <= row["p99_us"] and row["round_trips_per_s"] > 0, row
        else:
            assert row["kind"] == "throughput" and row["received_per_s"] > 0, row


@root
@pytest.mark.root
def test_measured_figures_are_positive(shortest: dict[str, Any]) -> None:
    cell = shortest["summary"]["cells"]["mtu1500-1cpu"]
    for config in _measured(shortest):
        row = cell["configs"][config]
        assert row["rounds"] == 2, (config, row)
        for figure in ("p50_us", "p99_us", "round_trips_per_s", "throughput_per_s"):
            assert row[figure] > 0, (config, figure, row)
        if config != "none":
            assert row["p50_ratio"] > 0 and row["throughput_ratio"] > 0, row
    assert cell["none_p50_spread_pct"] >= 0
    costs = {c["config"]: c for c in shortest["event_cost"]}
    assert set(costs) == set(_measured(shortest)) - {"none"}
    for config, cost in costs.items():
        for figure in ("datagrams", "events_per_datagram", "ns_per_datagram", "mean_ns"):
            assert cost[figure] > 0, (config, figure, cost)
    assert shortest["stamps"]["per_datagram"] > 0
    assert shortest["design_floor"]["floor_ns_per_datagram"] > 0
    attach = shortest["attach"]["stackprof"]
    assert attach["start_s"] > 0 and attach["peak_rss_mib"] > 0, attach
    assert attach["traced"]["request"]["traced"] > 0, attach


@root
@pytest.mark.root
def test_verdicts_from_the_allowed_set(shortest: dict[str, Any]) -> None:
    targets = shortest["targets"]
    assert len(targets) == 7, targets
    measured = set(_measured(shortest))
    for name, target in targets.items():
        assert set(target) >= {"value", "limit", "verdict"}, target
        assert target["limit"] > 0, target
        needs = TARGET_CONFIGS.get(name)
        if needs and needs not in measured:
            assert target["verdict"] == UNAVAILABLE and target["value"] is None, (name, target)
        else:
            assert target["verdict"] in VERDICTS, (name, target)
        assert name in shortest["_stdout"]


def test_bad_arguments_say_one_line() -> None:
    for argv in (["--seconds", "1.5"], ["--rounds", "0"], ["--mtus", "1400"], ["--nope"]):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (argv, proc.stderr)


def test_sockperf_output_is_read() -> None:
    pp = parse_pingpong(PINGPONG)
    assert (pp.p50_us, pp.p99_us, pp.avg_us, pp.dropped) == (7.603, 21.911, 8.678, 0)
    assert pp.round_trips_per_s == pytest.approx(31605 / 0.55)
    assert parse_throughput_seconds("sockperf: Total of 102428 messages sent in 1.000 sec") == 1.0
    snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 7 0 0 9\n"
    assert (parse_udp(snmp).received, parse_udp(snmp).sent) == (7, 9)


def test_presets_available_only_when_attach_has_them() -> None:
    assert availability("--detail --sample") == dict.fromkeys(VARIANTS)
    missing = availability("--ports")
    assert missing["stackprof"] is None
    assert missing["lean"] and missing["sample16"]
    assert all(why.startswith(UNAVAILABLE) for why in (missing["lean"], missing["sample16"]))


@pytest.mark.parametrize(
    ("value", "base", "noise", "verdict"),
    [
        (1.0, 1.0, 0.1, "met"),  # 1.0 <= 1.15: margin 0.15 > noise
        (1.3, 1.0, 0.1, "not met"),  # margin 0.15 > noise
        (1.2, 1.0, 0.1, "inconclusive"),  # margin 0.05 < none's spread
        (1.0, 1.0, None, "inconclusive"),  # one round: no spread measured
        (None, 1.0, 0.1, UNAVAILABLE),
    ],
)
def test_latency_verdict(
    value: float | None, base: float, noise: float | None, verdict: str
) -> None:
    assert latency_verdict(value, 1.15, base, noise) == verdict
