"""A datagram whose fragments never all arrive is counted as incomplete (real kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from profiler.loader import Tracer, choose_hooks, make_config
from profiler.run import Run
from profiler.session import finish
from servers.topology import Topology

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

PORT = 9998
# The first fragment of a 3000-byte UDP datagram, sent alone through a raw socket.
FIRST_FRAGMENT_ONLY = """
import socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = b"u" * 1472
udp = struct.pack("!HHHH", 40000, port, 8 + 3000, 0) + body
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 4242, 0x2000, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"""


def test_missing_fragment_makes_an_incomplete_datagram() -> None:
    with Topology(1500) as topo:
        config = make_config(PORT, PORT, netns=list(topo.netns_inodes()))
        with Tracer(config, choose_hooks()) as tracer:
            cmd = [
                "ip",
                "netns",
                "exec",
                topo.client_ns,
                sys.executable,
                "-c",
                FIRST_FRAGMENT_ONLY,
                topo.client_ip,
                topo.server_ip,
                str(PORT),
            ]
            subprocess.run(cmd, check=True, timeout=10)
            time.sleep(0.2)
            run = finish(tracer, Run())
    request = run.datagrams["request"]
    assert request["kernel_sent"] == 1 and request["kernel_fragmented"] == 1
    assert request["incomplete"] == 1
    assert request["kernel_delivered"] == 0
    assert run.stage("request", "backlog").get_total_count() == 1
    assert run.stage("request", "frag_train").get_total_count() == 0
    assert run.missed["flights_lost"] == 0
