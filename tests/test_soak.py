"""The soak benchmark for a minute (``benchmarks/soak.py --seconds 60``): stackprof's
memory flat after the warm-up (under 5% growth), no file descriptor gained, the flight
table far from full, each path's total histogram equal to the datagrams counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

REPO = Path(__file__).resolve().parent.parent
SECONDS = 60


def test_a_minute_at_full_rate_holds_steady(tmp_path: Path) -> None:
    figures = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--seconds", str(SECONDS)]
        + ["--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=SECONDS + 180,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for figure in ("RSS slope", "RSS growth", "open fds", "flight table", "total histogram"):
        assert figure in proc.stdout
    report = json.loads(figures.read_text())
    assert report["failures"] == []
    assert abs(report["rss_growth"]) <= 0.05
    assert len(report["samples"]) >= SECONDS - 5
    for row in report["totals"].values():
        assert row["histogram_total"] == row["traced"] > 1000
    assert report["flights"]["max"] < report["flights"]["slots"]
