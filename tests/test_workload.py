"""The reference workload end to end: real namespaces, veth, server and clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from servers.topology import NETNS_DIR, Topology, remove_leftovers
from servers.workload import Workload

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]
CLIENTS = 4
REPO = Path(__file__).resolve().parent.parent


def all_started(load: Workload, count: int, timeout: float = 5.0) -> list[int]:
    """load.pids() once count processes run and the list stays put for 0.1 s, bounded.

    Forking can lag on a busy machine, and a starting client briefly has a
    child of its own (ctypes.util.find_library runs ldconfig).
    """
    deadline = time.monotonic() + timeout
    previous: list[int] = []
    while time.monotonic() < deadline:
        pids = load.pids()
        if len(pids) == count and pids == previous:
            return pids
        previous = pids
        time.sleep(0.1)
    return load.pids()


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_pingpong_run(mtu: int) -> None:
    with (
        Topology(mtu) as topo,
        Workload(topo, clients=CLIENTS, request_size=512, response_size=8192, duration=2.0) as load,
    ):
        all_started(load, 1 + CLIENTS + 1)
        inodes = topo.netns_inodes()
        assert netns_inode(load.server_pid) == inodes.server
        clients = load.client_pids()
        assert len(clients) == CLIENTS + 1  # the load generator and its clients
        assert {netns_inode(pid) for pid in clients} == {inodes.client}
        result = load.wait()
    assert result.received > 0
    assert result.bad == 0 and result.failed_clients == 0
    assert 0 <= result.sent - result.received <= CLIENTS  # requests in flight at the end
    assert result.rtt.get_total_count() == result.received
    assert result.sent - result.timeouts <= result.server["requests"] <= result.sent
    assert result.received <= result.server["responses"] <= result.received + CLIENTS
    assert 1.9 < result.duration_s < 3.5
    assert result.server["cpu_s"] > 0 and 1.9 < result.server["duration_s"] < 4.0


def test_blast_run_counts_throughput() -> None:
    with Topology(1500) as topo, Workload(topo, clients=2, mode="blast", duration=1.0) as load:
        result = load.wait()
    assert result.sent > 0 and result.received == 0
    assert 0 < result.server["datagrams"] <= result.sent
    assert result.server["responses"] == 0
    assert result.server_datagrams_per_s > 0


def test_stop_kills_every_process() -> None:
    with Topology() as topo:
        with pytest.raises(RuntimeError, match="abort"), Workload(topo, duration=30.0) as load:
            pids = all_started(load, 1 + 1 + 8)
            assert len(pids) == 1 + 1 + 8
            raise RuntimeError("abort")
        time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)]


def test_invalid_arguments() -> None:
    topo = Topology()
    with pytest.raises(ValueError, match="transport"):
        Workload(topo, transport="sctp")
    with pytest.raises(ValueError, match="response_size"):
        Workload(topo, response_size=70000)
    with pytest.raises(ValueError, match="clients"):
        Workload(topo, clients=0)


def test_processes_pinned_to_the_cpus_asked() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    with (
        Topology() as topo,
        Workload(
            topo, clients=2, duration=0.5, server_cpu=server_cpu, client_cpu=client_cpu
        ) as load,
    ):
        all_started(load, 1 + 1 + 2)
        assert os.sched_getaffinity(load.server_pid) == {server_cpu}
        assert {frozenset(os.sched_getaffinity(pid)) for pid in load.client_pids()} == {
            frozenset({client_cpu})
        }
        assert load.wait().received > 0


OWNER = textwrap.dedent(
    """
    import time
    from servers.topology import Topology
    from servers.workload import Workload
    topo = Topology().__enter__()
    load = Workload(topo, clients=2, duration=30.0).__enter__()
    deadline, previous = time.monotonic() + 5.0, []
    while time.monotonic() < deadline and not (len(previous) == 4 and load.pids() == previous):
        previous = load.pids()
        time.sleep(0.1)
    print(*load.pids(), flush=True)
    time.sleep(30)
    """
)


def test_sigkilled_owner_leaves_no_process_running() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert owner.stdout is not None
        pids = [int(pid) for pid in owner.stdout.readline().split()]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert len(pids) == 4
    deadline = time.monotonic() + 3.0
    while [pid for pid in pids if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]
    removed = remove_leftovers()  # another stackprof run may have removed them first
    assert f"sp{owner.pid}-srv" in removed or not (NETNS_DIR / f"sp{owner.pid}-srv").exists()
    assert not (NETNS_DIR / f"sp{owner.pid}-cli").exists()
