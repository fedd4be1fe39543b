"""A production host: only one end of the traffic on the traced host (real BPF, veth,
sockperf from Debian's packages as the third-party request/response tool).

Two namespaces stand for two hosts; `stackprof attach --netns` names the one that is
the traced host. With the server's: every request is followed from its device
receive (receive-only), every response to its last fragment's driver transmit
(send-only, with its fragment train), and the server path has one sample per request
answered. With the clients': the client path's total is the round trip sockperf saw.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import in_netns
from sockperf import attach_ready, sockperf_server

from servers.topology import Topology
from tests.prometheus_server import free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

PORT = 11111
SIZE = 8192
SECONDS = 3
FRAGMENTS = {1500: 6, 9000: 1}
CORE_RX = ("driver", "backlog", "ip_udp", "sock_wait", "recv")


@dataclass
class Outcome:
    doc: dict[str, Any]
    sockperf: dict[str, float]

    def row(self, path: str) -> dict[str, Any]:
        return dict(self.doc["datagrams"][path])

    def stage(self, path: str, stage: str) -> dict[str, Any]:
        return next(s for s in self.doc["stages"] if (s["path"], s["stage"]) == (path, stage))


def ping_pong(topo: Topology) -> dict[str, float]:
    """sockperf ping-pong, 8 KiB each way: its message counts and its RTT median
    (sockperf reports half the round trip)."""
    out = in_netns(
        topo.client_ns,
        "sockperf", "pp", "-i", topo.server_ip, "-p", str(PORT),
        "-m", str(SIZE), "-t", str(SECONDS),
        timeout=60,
    )  # fmt: skip
    sent = re.search(r"SentMessages=(\d+)", out)
    received = re.search(r"ReceivedMessages=(\d+)", out)
    p50 = re.search(r"percentile 50\.000 =\s+([\d.]+)", out)
    assert sent and received and p50, out
    return {
        "sent": int(sent.group(1)),
        "received": int(received.group(1)),
        "rtt_p50_us": 2 * float(p50.group(1)),
    }


def attached(topo: Topology, netns: str, tmp: Path) -> Outcome:
    """`stackprof attach` with one namespace as the traced host, while sockperf
    ping-pongs between the two."""
    metrics = free_port()
    duration = SECONDS + 6
    cmd = [sys.executable, "-m", "profiler", "attach", "--ports", f"{PORT}-{PORT}"]
    cmd += ["--netns", netns, "--duration", str(duration), "--no-live"]
    cmd += ["--metrics", f"127.0.0.1:{metrics}", "--json", str(tmp / "summary.json")]
    cmd += ["--out", str(tmp / "run.json")]
    with sockperf_server(topo.server_ns, topo.server_ip, PORT):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert attach_ready(proc, metrics)
            tool = ping_pong(topo)
            _, err = proc.communicate(timeout=duration + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    return Outcome(json.loads((tmp / "summary.json").read_text()), tool)


def close(a: float, b: float, within: float) -> bool:
    return abs(a - b) <= within * max(a, b)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_server_host(mtu: int, tmp_path: Path) -> None:
    """Only the server's namespace traced: requests receive-only from their device
    receive, responses send-only with their fragment train, one residence sample per
    request answered whose stages add up to its total."""
    with Topology(mtu) as topo:
        out = attached(topo, topo.server_ns, tmp_path)
        assert out.doc["meta"]["scope"] == [topo.netns_inodes().server]
    sent = out.sockperf["sent"]
    request, response = out.row("request"), out.row("response")
    assert close(request["traced"], sent, 0.01), (request, out.sockperf)
    assert request["receive_only"] == request["traced"] and request["both_ends"] == 0, request
    for stage in ("total", *CORE_RX[1:]):
        assert close(out.stage("request", stage)["count"], request["traced"], 0.01), stage
    assert not out.stage("request", "send")["count"]
    why = out.doc["meta"]["unobserved_paths"]["request"]
    assert "sent off the traced host" in why["send"], why
    assert close(response["send_only"], out.sockperf["received"], 0.01), (response, out.sockperf)
    assert response["traced"] == 0, response
    assert close(out.stage("response", "tx_frags")["count"], response["send_only"], 0.001)
    assert response["fragments_per_datagram"] == FRAGMENTS[mtu], response
    server = out.stage("server", "total")
    assert close(server["count"], request["traced"], 0.01), (server, request)
    parts = sum(
        out.stage("server", s)["p50_us"] for s in ("rx_stack", "sock_wait", "app", "tx_stack")
    )
    assert close(parts, server["p50_us"], 0.10), (parts, server)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_client_host(mtu: int, tmp_path: Path) -> None:
    """Only the clients' namespace traced: the client path's total is the round trip
    sockperf measured, and the time away (wire and the other host) is its largest part.

    Over veth the other end's receive runs on the sender's CPU, in the softirq that
    each packet's transmit raises: fragments sent before the last are received by the
    server's namespace inside the client's send, so at MTU 1500 (6 fragments) that
    work lands in tx_stack, not away. With one packet (MTU 9000) all of the server's
    work is away, as between two hosts; the largest part is checked there."""
    with Topology(mtu) as topo:
        out = attached(topo, topo.client_ns, tmp_path)
    client = out.stage("client", "total")
    assert close(client["count"], out.sockperf["received"], 0.02), (client, out.sockperf)
    assert close(client["p50_us"], out.sockperf["rtt_p50_us"], 0.10), (client, out.sockperf)
    parts = {s: out.stage("client", s)["p50_us"] for s in ("tx_stack", "away", "rx_stack")}
    parts |= {s: out.stage("client", s)["p50_us"] for s in ("sock_wait", "recv")}
    if mtu == 9000:
        assert max(parts, key=lambda s: parts[s]) == "away", parts
    assert close(sum(parts.values()), client["p50_us"], 0.10), (parts, client)
    assert out.row("request")["send_only"] > 0 and out.row("response")["receive_only"] > 0
