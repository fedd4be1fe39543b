"""The kernel files a datagram under the key tests/flight_keys.py computes (real BPF, real veth)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from flight_keys import flight_key, key_tuple, parse_ipv4_udp

from profiler.collector import live_flights
from profiler.loader import Tracer, choose_hooks, make_config
from servers.topology import Topology

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

PORT = 9999
CAPTURE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(3)
# A receiver that never reads: its datagrams stay in flight (with no socket on
# the port they would be dropped, and a dropped datagram's flight ends).
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
seen = 0
while seen < 2:
    pkt = s.recv(65535)
    if pkt[9] == 17 and pkt[6:8] in (b"\\x20\\x00", b"\\x40\\x00"):
        print(pkt[:28].hex(), flush=True)
        seen += 1
sys.stdin.readline()
"""
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"f" * 4000, (sys.argv[1], int(sys.argv[2])))
s.sendto(b"w" * 100, (sys.argv[1], int(sys.argv[2])))
"""


def in_netns(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_kernel_and_python_key_datagrams_alike() -> None:
    with Topology(1500) as topo:
        config = make_config(PORT, PORT, netns=list(topo.netns_inodes()))
        with Tracer(config, choose_hooks()) as tracer:
            capture = in_netns(topo.server_ns, CAPTURE, str(PORT))
            assert capture.stdout and capture.stdout.readline().strip() == "ready"
            in_netns(topo.client_ns, SEND, topo.server_ip, str(PORT)).wait(timeout=10)
            assert capture.stdout
            out = capture.stdout.readline() + capture.stdout.readline()
            time.sleep(0.1)
            in_kernel = {key_tuple(slot.key) for slot in live_flights(tracer)}
            capture.communicate("done\n", timeout=10)
    headers = [parse_ipv4_udp(bytes.fromhex(line)) for line in out.split()]
    assert sorted(h.fragmented for h in headers) == [False, True]
    expected = {key_tuple(flight_key(h)) for h in headers}
    assert expected <= in_kernel
