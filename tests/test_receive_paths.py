"""The receive paths of a NIC driver and the lab's one-sided scopes (real BPF, veth).

`trace --rx napi` makes veth receive through NAPI/GRO as a NIC driver does: the
device-receive stamp then comes from napi_gro_receive_entry, and every stage still
has its samples. `trace --scope server` traces only the server's namespace while the
workload is the same. A boundary that is hooked but never fires is said, with why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from profiler.collector import collect
from profiler.hooks import Candidate
from profiler.loader import Tracer, choose_hooks, make_config
from profiler.run import Run
from profiler.session import base_meta
from servers.topology import Topology

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

FRAGMENTS = {1500: 6, 9000: 1}


def trace(tmp: Path, *args: str) -> dict[str, Any]:
    """`stackprof trace` (udp, 4 clients, 3 s) with args; its --json summary."""
    out = tmp / "summary.json"
    cmd = [sys.executable, "-m", "profiler", "trace", "--duration", "3", "--clients", "4"]
    cmd += ["--no-live", "--json", str(out), "--out", str(tmp / "run.json"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(out.read_text()))


def count(doc: dict[str, Any], path: str, stage: str) -> int:
    return next(int(s["count"]) for s in doc["stages"] if (s["path"], s["stage"]) == (path, stage))


def accounted(doc: dict[str, Any], path: str) -> int:
    """Datagrams of a path traced, plus those the receive-return pairing could not
    name (missed as pair_mismatch): every one the kernel delivered."""
    mismatched = doc["missed"]["pair_mismatch"] if path == "request" else 0
    return int(doc["datagrams"][path]["traced"]) + int(mismatched)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_napi_receive(mtu: int, tmp_path: Path) -> None:
    """Through NAPI/GRO: counts match what the clients sent, the device receive is
    napi_gro_receive_entry's, driver and backlog have their samples, fragments per
    response as the MTU says."""
    doc = trace(tmp_path, "--rx", "napi", "--mtu", str(mtu))
    assert "napi_gro_receive_entry" in doc["meta"]["hooks"]["dev_rx"]
    assert doc["meta"]["rx"] == "napi"
    for path in ("request", "response"):
        row = doc["datagrams"][path]
        assert abs(accounted(doc, path) - row["sent"]) <= 0.01 * row["sent"], (path, row)
        for stage in ("driver", "backlog"):
            assert count(doc, path, stage) >= 0.99 * row["traced"], (path, stage)
    assert doc["datagrams"]["response"]["fragments_per_datagram"] == FRAGMENTS[mtu]
    assert doc["datagrams"]["request"]["fragments_per_datagram"] == 1


def test_scope_server(tmp_path: Path) -> None:
    """Only the server's namespace traced, the same workload: requests receive-only,
    responses send-only, the server path sampled and the client path said to be off
    the traced host."""
    doc = trace(tmp_path, "--scope", "server", "--mtu", "1500")
    request, response = doc["datagrams"]["request"], doc["datagrams"]["response"]
    assert request["receive_only"] == request["traced"] > 0, request
    assert response["send_only"] > 0.99 * response["sent"], response
    assert count(doc, "response", "tx_frags") == response["send_only"]
    assert count(doc, "server", "total") > 0.9 * request["traced"]
    assert count(doc, "client", "total") == 0
    why = doc["meta"]["unobserved_paths"]["client"]["total"]
    assert "off the traced host" in why, why
    assert doc["meta"]["scope"]["namespaces"] == "server"


SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200):
    s.sendto(b"x" * 4000, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.002)
"""
RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(3)
print("ready", flush=True)
try:
    while True:
        s.recv(65535)
except TimeoutError:
    pass
"""


def test_a_boundary_that_never_fires_is_said(tmp_path: Path) -> None:
    """dev_rx hooked only where veth's default path never goes (napi_gro_frags_entry):
    driver and backlog have no sample, and the run says they are unobserved because
    that boundary never fired, naming its hook."""
    port = 9100
    choice = choose_hooks(cache=False)
    quiet = Candidate("tp_btf", "napi_gro_frags_entry", ("tp_btf_napi_gro_frags_entry",))
    choice.chosen["dev_rx"] = quiet
    with Topology(1500) as topo:
        run = Run(meta=base_meta(choice, "udp"))
        config = make_config(port, port, netns=list(topo.netns_inodes()))
        with Tracer(config, choice) as tracer:
            ns = ["ip", "netns", "exec"]
            receiver = subprocess.Popen(
                [*ns, topo.server_ns, sys.executable, "-c", RECEIVE, str(port)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert receiver.stdout and receiver.stdout.readline().strip() == "ready"
            sender = [*ns, topo.client_ns, sys.executable, "-c", SEND, topo.server_ip, str(port)]
            subprocess.run(sender, check=True, timeout=30)
            receiver.wait(timeout=10)
            time.sleep(0.1)
            collect(tracer, run)
    assert run.datagrams["request"]["traced"] > 150, run.datagrams["request"]
    for stage in ("driver", "backlog"):
        assert stage in run.meta["unobserved"], run.meta["unobserved"]
        why = run.meta["unobserved_reasons"][stage]
        assert "dev_rx" in why and quiet.label in why and "never fired" in why, why
    assert "total" not in run.meta["unobserved"] and "qdisc" not in run.meta["unobserved"]
