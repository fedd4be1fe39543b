"""Recorded runs under traces/fixtures/ (real traces of this project's topology, both
ends pinned to CPU 0, MTU 9000 and 1500) through report, compare and export, as a user
would run them later on another machine: no root, no BPF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from profiler.run import Run

FIXTURES = Path(__file__).resolve().parent.parent / "traces" / "fixtures"
JUMBO = FIXTURES / "udp-mtu9000-cpu0.json"
FRAGMENTED = FIXTURES / "udp-mtu1500-cpu0.json"


def stackprof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiler", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("path", [JUMBO, FRAGMENTED], ids=["mtu9000", "mtu1500"])
def test_fixture_is_a_complete_run(path: Path) -> None:
    run = Run.load(path)
    client = run.meta["client"]
    assert run.meta["transport"] == "udp" and client["bad"] == 0
    assert run.client_rtt.get_total_count() == client["received"]
    for side in ("request", "response"):
        assert run.stage(side, "total").get_total_count() == run.datagrams[side]["traced"]


def test_report_shows_both_paths_and_the_hooks() -> None:
    proc = stackprof("report", str(FRAGMENTED))
    assert proc.returncode == 0, proc.stderr
    for title in ("request path (µs)", "response path (µs)", "stages and hooks", "missed events"):
        assert title in proc.stdout
    traced = Run.load(FRAGMENTED).datagrams["response"]["traced"]
    assert str(traced) in proc.stdout


def test_compare_shows_what_fragmentation_adds() -> None:
    """MTU 9000 (A) against 1500 (B): the response is one packet against six
    fragments, so only B has a fragment train and its reassembly makes ip_udp longer."""
    proc = stackprof("compare", str(JUMBO), str(FRAGMENTED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("mtu 9000 vs 1500")
    response = proc.stdout.split("response path")[1]
    frag_train = next(line.split() for line in response.splitlines() if "frag_train" in line)
    assert frag_train[1] == "—" and frag_train[2] != "—"
    jumbo, fragmented = Run.load(JUMBO), Run.load(FRAGMENTED)
    assert jumbo.frags["response"].get_mean_value() == 1
    assert fragmented.frags["response"].get_mean_value() == 6
    p50 = {
        name: run.stage("response", "ip_udp").get_value_at_percentile(50)
        for name, run in (("jumbo", jumbo), ("fragmented", fragmented))
    }
    assert p50["fragmented"] > p50["jumbo"]


def test_exports_round_trip(tmp_path: Path) -> None:
    for suffix in ("csv", "hlog", "json"):
        out = tmp_path / f"run.{suffix}"
        proc = stackprof("export", str(FRAGMENTED), str(out))
        assert proc.returncode == 0, proc.stderr
    run = Run.load(FRAGMENTED)
    frame = pd.read_csv(tmp_path / "run.csv")
    total = frame[(frame["path"] == "response") & (frame["stage"] == "total")].iloc[0]
    assert total["count"] == run.datagrams["response"]["traced"]
    assert json.loads((tmp_path / "run.json").read_text()) == json.loads(json.dumps(run.summary()))
    assert (tmp_path / "run.hlog").read_text().count("Tag=response/total") == 1


def test_a_file_that_is_not_a_run_is_one_line_and_status_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    for args in (("report", str(bogus)), ("compare", str(JUMBO), str(tmp_path / "missing"))):
        proc = stackprof(*args)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("stackprof: error:")
