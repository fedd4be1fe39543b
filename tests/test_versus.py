"""benchmarks/versus.py: one checkout against another, BPF ns per datagram, alternating.

The root test runs this checkout against itself (its shortest settings): both sides
measured on the same hooks, with the ratio and its verdict derived from their figures;
the spread of two identical sides is this machine's noise, not a property checked here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from servers.topology import NETNS_DIR

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "versus.py"
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["/nonexistent"],
        [str(REPO / "tests")],
        [str(REPO), "--rounds", "0"],
        [str(REPO), "--limit", "-1"],
        [str(REPO), "--json", "/nonexistent/x.json"],
    ],
)
def test_bad_arguments_say_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, (argv, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, (argv, proc.stderr)


@root
@pytest.mark.root
def test_this_checkout_against_itself(tmp_path: Path) -> None:
    out = tmp_path / "versus.json"
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), str(REPO), "--rounds", "2", "--seconds", "1"]
        + ["--json", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(f"sp{proc.pid}-")]
    doc = json.loads(out.read_text())
    assert doc["before"] == doc["after"] == str(REPO)
    for side in ("before", "after"):
        rounds = doc["rounds"][side]
        assert len(rounds) == 2 and all(r["datagrams"] > 0 for r in rounds), rounds
        median = statistics.median(r["ns_per_datagram"] for r in rounds)
        assert doc["ns_per_datagram"][side] == median > 0
    assert doc["programs"]["before"].keys() == doc["programs"]["after"].keys()
    ratio = doc["ns_per_datagram"]["after"] / doc["ns_per_datagram"]["before"]
    target = doc["target"]
    assert target["value"] == round(ratio, 4) and target["limit"] == 1.05
    assert target["verdict"] == ("met" if ratio <= 1.05 else "not met")
    assert f"after / before: {ratio:.3f}" in stdout
