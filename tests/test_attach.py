"""`stackprof attach`: the same probes on a workload stackprof did not start, filtered
by port range, network namespace, pid and cgroup of the sending task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.topology import Topology
from servers.workload import Workload

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

PORT = 7000
CGROUP2 = next(
    (
        Path(line.split()[1])
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[2] == "cgroup2"
    ),
    None,
)


@pytest.fixture(scope="module")
def workload() -> Iterator[Workload]:
    """A UDP workload at MTU 1500 (fragmented 8 KiB responses) that stackprof did not start."""
    with Topology(1500) as topo, Workload(topo, clients=2, duration=40, port=PORT) as load:
        yield load


def attach(tmp: Path, *args: str) -> dict[str, Any]:
    out = tmp / "attach.json"
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "attach", "--duration", "2", "--no-live"]
        + ["--json", str(out), "--out", str(tmp / "run.json"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def traced(doc: dict[str, Any], path: str) -> int:
    return int(doc["datagrams"][path]["traced"])


def namespaces(load: Workload) -> str:
    return f"{load.topology.client_ns},{load.topology.server_ns}"


def test_both_paths_of_the_namespaces(workload: Workload, tmp_path: Path) -> None:
    doc = attach(tmp_path, "--ports", f"{PORT}-{PORT}", "--netns", namespaces(workload))
    assert doc["meta"]["transport"] == "attach"
    assert traced(doc, "request") > 100 and traced(doc, "response") > 100
    assert doc["datagrams"]["response"]["fragments_per_datagram"] == 6.0
    total = next(s for s in doc["stages"] if s["path"] == "response" and s["stage"] == "total")
    assert total["count"] == traced(doc, "response")
    assert "ring_wait" not in doc["meta"]["stages"]


def test_pid_filter_keeps_only_what_that_process_sends(workload: Workload, tmp_path: Path) -> None:
    doc = attach(tmp_path, "--ports", str(PORT), "--pid", str(workload.server_pid))
    assert traced(doc, "request") == 0
    assert traced(doc, "response") > 100


@pytest.mark.skipif(CGROUP2 is None, reason="no cgroup2 mount")
def test_cgroup_filter_keeps_only_what_its_members_send(workload: Workload, tmp_path: Path) -> None:
    assert CGROUP2 is not None
    group = CGROUP2 / f"stackprof-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(workload.server_pid))
        doc = attach(tmp_path, "--ports", str(PORT), "--cgroup", str(group))
    finally:
        (CGROUP2 / "cgroup.procs").write_text(str(workload.server_pid))
        group.rmdir()
    assert traced(doc, "request") == 0
    assert traced(doc, "response") > 100


def test_other_namespace_or_ports_trace_nothing(workload: Workload, tmp_path: Path) -> None:
    elsewhere = attach(tmp_path, "--ports", str(PORT), "--netns", f"/proc/{os.getpid()}/ns/net")
    other_ports = attach(
        tmp_path, "--ports", f"{PORT + 1}-{PORT + 9}", "--netns", namespaces(workload)
    )
    for doc in (elsewhere, other_ports):
        assert traced(doc, "request") == traced(doc, "response") == 0
        assert doc["datagrams"]["request"]["kernel_sent"] == 0
    assert workload.loadgen.running()


@pytest.mark.parametrize(
    "args",
    [
        ("--ports", "9-2"),
        ("--ports", "7000", "--netns", "no-such-namespace"),
        ("--ports", "7000", "--cgroup", "/no/such/cgroup"),
        ("--ports", "7000", "--pid", "0"),
    ],
)
def test_bad_filters_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "attach", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("stackprof: error:")


def test_verbose_says_how_long_start_up_took(tmp_path: Path) -> None:
    """--verbose: the time from the process's start to its probes attached, on stderr
    and in the run (the overhead benchmark reads it)."""
    out = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "profiler", "attach", "--ports", "7999-7999", "--verbose"]
    done = subprocess.run(
        [*cmd, "--duration", "1", "--no-live", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if "probes attached" in x)
    said = float(line.split("probes attached ")[1].split(" s")[0])
    meta = json.loads(out.read_text())["summary"]["meta"]
    assert 0 < said == meta["attached_after_s"] < 60
