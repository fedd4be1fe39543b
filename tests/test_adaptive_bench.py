"""benchmarks/adaptive.py: auto against the best fixed setting, without the tracer.

Its verdict is a benchmark's (quiet machine, --rounds 5): here, bad arguments get one line,
the ratio is computed from the medians it reports, and a short real run writes them.
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
SCRIPT = REPO / "benchmarks" / "adaptive.py"
sys.path.insert(0, str(REPO))

from benchmarks.adaptive import cell_ratios  # noqa: E402


@pytest.mark.parametrize(
    "argv",
    [
        ["--rounds", "0"],
        ["--duration", "0"],
        ["--clients", "16,x"],
        ["--values", "0"],
        ["--transport", "tcp"],
        ["--json", "/nonexistent/x.json"],
    ],
)
def test_bad_arguments_say_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("adaptive.py: ")


def test_auto_is_measured_against_the_best_fixed_median() -> None:
    rates: dict[int | str, list[float]] = {8: [10, 30, 20], 16: [25, 26, 27], "auto": [24, 1, 99]}
    assert cell_ratios(rates) == (16, 26, 24 / 26)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")
def test_a_short_run_writes_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "adaptive.json"
    argv = ["--transport", "udp-mmsg", "--clients", "2", "--values", "1,4", "--duration", "1"]
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), *argv, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        stdout, stderr = proc.communicate(timeout=120)
    # Its own namespaces only: starting a Topology removes those a dead run left behind.
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(f"sp{proc.pid}-")]
    assert proc.returncode in (0, 1), stderr
    doc = json.loads(out.read_text())
    (cell,) = doc["cells"]
    assert doc["transport"] == "udp-mmsg" and cell["clients"] == 2
    medians = {k: statistics.median(v) for k, v in cell["rates"].items()}
    assert set(medians) == {"1", "4", "auto"} and all(m > 0 for m in medians.values())
    best = max(("1", "4"), key=medians.__getitem__)
    assert str(cell["best_fixed"]) == best
    assert cell["auto_over_best"] == pytest.approx(medians["auto"] / medians[best], abs=1e-3)
    assert f"auto/best = {cell['auto_over_best']:.3f}" in stdout
    assert proc.returncode == (0 if cell["auto_over_best"] >= 0.9 else 1)
