"""The lab's client path against the clients' own clock: the kernel's view of a round
trip (send syscall entry to the response's receive return) and the one the clients
time (just before the send call to just after that receive) must agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.run import Run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

CLIENTS = 2


def trace(tmp: Path, mtu: int) -> Run:
    """A short `stackprof trace --transport udp`, read back from its saved run."""
    out = tmp / "run.json"
    cmd = [sys.executable, "-m", "profiler", "trace", "--no-live", "--out", str(out)]
    cmd += ["--transport", "udp", "--mtu", str(mtu), "--duration", "3"]
    cmd += ["--clients", str(CLIENTS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Run.load(out)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_client_total_agrees_with_the_clients_rtt(tmp_path: Path, mtu: int) -> None:
    run = trace(tmp_path, mtu)
    assert {"server", "client"} <= set(run.paths())
    assert run.stage("server", "total").get_total_count() > 0
    client, total = run.meta["client"], run.stage("client", "total")
    assert client["bad"] == 0 and client["received"] > 1000
    # One sample per response read: a client's exchange cut by the probes' attach or
    # detach (one each end) or one whose response came late, after its timeout (the
    # kernel pairs it, the client does not count it) may differ; nothing else.
    slack = 2 * CLIENTS + client["timeouts"]
    assert abs(total.get_total_count() - client["received"]) <= slack
    assert run.client_rtt.get_total_count() == client["received"]
    kernel = total.get_value_at_percentile(50)
    clients = run.client_rtt.get_value_at_percentile(50)
    assert abs(kernel - clients) <= 0.10 * clients, (mtu, kernel, clients)
