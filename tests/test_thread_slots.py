"""Two traced threads whose ids share a stamp slot: each call still timed, the takeovers counted.

Thread stamps live in an array indexed by thread id modulo SP_THREAD_ENTRIES. Two senders with
ids that far apart are made with /proc/sys/kernel/ns_last_pid (real processes, real veth).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from profiler import abi
from profiler.loader import Tracer, choose_hooks, make_config
from servers.topology import Topology

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF, namespaces, ns_last_pid"),
]

PORT = 9998
SENDS = ("a", "b", "a")
RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(10)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    s.recvfrom(65535)
print("done", flush=True)
"""
# Forks two senders whose pids differ by exactly `slots`, then has them send in turn.
SEND = """
import os, random, socket, sys, time
host, port, slots, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
LAST = "/proc/sys/kernel/ns_last_pid"
PID_MAX = int(open("/proc/sys/kernel/pid_max").read())

def sender(r, w):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while os.read(r, 1) == b"s":
        s.sendto(b"x" * 4000, (host, port))
        os.write(w, b"k")
    os._exit(0)

def fork_at(pid):
    with open(LAST, "w") as f:
        f.write(str(pid - 1))
    go_r, go_w = os.pipe()
    ack_r, ack_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w)
        os.close(ack_r)
        sender(go_r, ack_w)
    os.close(go_r)
    os.close(ack_w)
    return child, go_w, ack_r

def stop(child, go):
    os.write(go, b"q")
    os.waitpid(child, 0)

for attempt in range(50):
    base = random.randrange(1000, PID_MAX - slots - 1)
    a = fork_at(base)
    b = fork_at(base + slots)
    if a[0] == base and b[0] == base + slots:
        break
    stop(*a[:2])
    stop(*b[:2])
else:
    sys.exit("could not place the two senders")
print(a[0], b[0], flush=True)
for who in order:
    child, go, ack = a if who == "a" else b
    os.write(go, b"s")
    os.read(ack, 1)
    time.sleep(0.05)
stop(*a[:2])
stop(*b[:2])
"""


def in_netns(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def test_senders_sharing_a_stamp_slot_are_each_timed() -> None:
    slots = abi.CONST["SP_THREAD_ENTRIES"]
    with Topology(1500) as topo:
        config = make_config(PORT, PORT, netns=list(topo.netns_inodes()))
        with Tracer(config, choose_hooks()) as tracer:
            receiver = in_netns(topo.server_ns, RECEIVE, str(PORT), str(len(SENDS)))
            assert receiver.stdout and receiver.stdout.readline().strip() == "ready"
            sender = in_netns(
                topo.client_ns, SEND, topo.server_ip, str(PORT), str(slots), "".join(SENDS)
            )
            out, _ = sender.communicate(timeout=30)
            assert sender.returncode == 0, out
            a, b = (int(p) for p in out.split())
            assert b - a == slots
            assert receiver.communicate(timeout=10)[0].strip() == "done"
            time.sleep(0.1)
            assert tracer.stats is not None
            request = tracer.stats.path_counters[abi.PATHS.index("request")]
            delivered = request[abi.PATH_COUNTERS.index("delivered")]
            taken = tracer.stats.missed[abi.MISSES.index("thread_slot")]
    assert delivered == len(SENDS)
    assert taken == len(SENDS) - 1
