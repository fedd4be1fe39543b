"""Doctor's receive path (profiler.receive): the receive tracepoints, the attach kind that
loads for each, which fire for datagrams received by netif_rx (backlog) and by NAPI/GRO
(napi) in its self-test, and nothing left behind (namespaces, tracefs instances) on any
exit: done, failed, killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from profiler import receive, tracefs
from profiler.diagnosis import RxSelfTest
from profiler.hooks import DEVICE_RECEIVES
from profiler.loader import HookChoice

REPO = Path(__file__).resolve().parent.parent
STACKPROF = REPO / ".venv" / "bin" / "stackprof"
RECEIVES = (*DEVICE_RECEIVES, "netif_receive_skb")
NS_LINK = re.compile(r"net:\[(\d+)\]")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF, namespaces, tracefs")


def net_holders() -> dict[int, set[str]]:
    """Every network namespace something holds, by inode, with a path that opens it: a
    task's own, an open file's (/proc/*/fd), a mount's (an nsfs bind mount, as ip netns)."""
    held: dict[int, set[str]] = defaultdict(set)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for link in [*proc.glob("task/*/ns/net"), *proc.glob("fd/*")]:
            with suppress(OSError):
                match = NS_LINK.fullmatch(os.readlink(link))
                if match:
                    held[int(match[1])].add(str(link))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        match = NS_LINK.fullmatch(fields[3])
        if match and " - nsfs " in line:
            held[int(match[1])].add(fields[4])
    return held


def _link_names() -> list[str]:
    with IPRoute() as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


def namespaces_with(prefix: str) -> list[str]:
    """Held network namespaces with a device named prefix*: the self-test's, if left.
    (Inode numbers are reused as soon as a namespace is freed: they name none for long.)"""
    found = []
    for holders in net_holders().values():
        path = sorted(holders)[0]
        with suppress(OSError, RuntimeError):  # its holder went away meanwhile
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                names = receive.in_netns(fd, _link_names, "links")
            finally:
                os.close(fd)
            if any(name.startswith(prefix) for name in names):
                found.append(path)
    return found


def mine() -> int:
    """How many network namespaces this process's threads and files hold."""
    here = f"/proc/{os.getpid()}/"
    return len([i for i, h in net_holders().items() if any(x.startswith(here) for x in h)])


def own_state() -> tuple[int, int, list[str]]:
    """This process's open files, threads and doctor tracefs instances."""
    instances = sorted(p.name for p in (tracefs.TRACEFS / "instances").glob("stackprof-doctor-*"))
    return len(os.listdir("/proc/self/fd")), threading.active_count(), instances


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """`stackprof doctor --json`, and the namespaces with a self-test veth before and after."""
    before = namespaces_with(receive.DEVICE_PREFIX)
    proc = subprocess.run(
        [str(STACKPROF), "doctor", "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    parsed: dict[str, Any] = json.loads(proc.stdout)
    parsed["_left"] = before, namespaces_with(receive.DEVICE_PREFIX)
    return parsed


@pytest.mark.root
@needs_root
def test_json_lists_each_receive_tracepoint(doc: dict[str, Any]) -> None:
    """Each device receive and the stack entry: there, loading as the hook point's kind."""
    hooks = doc["receive_hooks"]
    assert list(hooks) == list(RECEIVES)
    for name, hook in hooks.items():
        point = "stack_rx" if name == "netif_receive_skb" else "dev_rx"
        assert hook["boundary"] == point and hook["exists"] is True, hook
        assert hook["kind"] in ("tp_btf", "raw_tp"), hook
        assert doc["attach"][hook["kind"]]["works"], hook
        if doc["hooks"][point]["kind"] in ("tp_btf", "raw_tp"):
            assert hook["kind"] == doc["hooks"][point]["kind"], (hook, doc["hooks"][point])


@pytest.mark.root
@needs_root
def test_self_test_sees_each_mode_enter_by_its_tracepoint(doc: dict[str, Any]) -> None:
    """Every fragment of every datagram: by netif_rx in backlog mode, by
    napi_gro_receive_entry (and not netif_rx) in napi mode; netif_receive_skb in both."""
    entry = {"backlog": "netif_rx", "napi": "napi_gro_receive_entry"}
    tests = doc["rx_selftest"]
    assert list(tests) == ["backlog", "napi"]
    for mode, test in tests.items():
        assert test["skipped"] is None and test["error"] is None, test
        assert test["received"] == test["datagrams"] > 0, test
        assert test["fragments"] == 6 and test["mtu"] == 1500 and test["payload"] == 8192
        packets = test["datagrams"] * test["fragments"]
        assert test["fired"][entry[mode]] == packets, test
        assert test["fired"]["netif_receive_skb"] == packets, test
        assert test["fired_names"] == [entry[mode], "netif_receive_skb"], test
    assert tests["napi"]["fired"]["netif_rx"] == 0
    assert doc["checks"]["rx_selftest"]["status"] == "ok", doc["checks"]["rx_selftest"]


@pytest.mark.root
@needs_root
def test_doctor_leaves_no_namespace(doc: dict[str, Any]) -> None:
    """The self-test's namespaces were anonymous, held by doctor alone: counted before and
    after, none is left anywhere; nor a tracefs instance, nor a veth in this namespace."""
    assert doc["_left"] == ([], [])
    assert not list((tracefs.TRACEFS / "instances").glob("stackprof-doctor-*"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert receive.DEVICE_PREFIX not in links


@pytest.mark.root
@needs_root
def test_in_process_namespace_count_before_and_after() -> None:
    """Run in this process: the same namespaces, files and threads afterwards as before."""
    held, state = mine(), own_state()
    results = receive.self_test(True)
    assert [r.mode for r in results if r.ran and r.received == r.datagrams] == ["backlog", "napi"]
    assert mine() == held and own_state() == state
    assert namespaces_with(f"{receive.DEVICE_PREFIX}{os.getpid()}") == []


@pytest.mark.root
@needs_root
def test_a_failure_while_counting_is_reported_and_cleaned_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(trace: str) -> tracefs.Counts:
        raise ValueError("unreadable trace")

    monkeypatch.setattr(tracefs, "count", broken)
    state = own_state()
    result = receive.run_mode("napi", list(RECEIVES))
    assert result.error == "unreadable trace" and not result.ran
    assert result.received == result.datagrams  # it failed reading, after the datagrams
    assert own_state() == state
    assert namespaces_with(f"{receive.DEVICE_PREFIX}{os.getpid()}") == []


@pytest.mark.root
@needs_root
def test_a_failure_while_building_is_reported_and_cleaned_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(ifname: str) -> None:
        raise OSError(0, "no ethtool here")

    monkeypatch.setattr(receive, "_napi_receive", refuse)
    state = own_state()
    result = receive.run_mode("napi", list(RECEIVES))
    assert re.fullmatch(r"ethtool -K spdoc\d+nc: no ethtool here", result.error or ""), result
    assert own_state() == state
    assert namespaces_with(f"{receive.DEVICE_PREFIX}{os.getpid()}") == []


KILLED = """
import time
from pyroute2 import IPRoute

from profiler import receive, tracefs
pair = receive.VethPair("napi").__enter__()
events = tracefs.net_events([pair.server_if], ["netif_rx"], "doctor")
events.__enter__()  # held: a context manager collected would remove its instance
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.root
@needs_root
def test_killed_mid_test_leaves_only_an_instance_the_next_run_removes() -> None:
    """SIGKILL: the anonymous namespaces go with the process; its tracefs instance stays
    until the next doctor removes it (its pid is gone)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout
        assert proc.stdout.readline() == "ready\n"
        assert len(namespaces_with(f"{receive.DEVICE_PREFIX}{proc.pid}")) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert namespaces_with(f"{receive.DEVICE_PREFIX}{proc.pid}") == []
    left = tracefs.instance_dir("doctor", proc.pid)
    assert left.is_dir()
    assert left.name in tracefs.remove_stale_instances()
    assert not left.exists()


def test_not_root_skips_with_a_reason() -> None:
    results = receive.self_test(False)
    assert [(r.mode, r.skipped) for r in results] == [
        ("backlog", "needs root: network namespaces and tracefs"),
        ("napi", "needs root: network namespaces and tracefs"),
    ]
    hooks = receive.receive_hooks(HookChoice(), root=False)
    assert [h.name for h in hooks] == list(RECEIVES)
    assert all(h.exists is None and h.kind is None and h.refused for h in hooks)


@pytest.mark.root
@needs_root
def test_unchosen_tracepoints_are_proved_alone() -> None:
    """Where the hook choice holds no candidate with them, each is loaded on its own; one
    the kernel lacks is not loaded at all."""
    choice = HookChoice(chosen={"dev_rx": None, "stack_rx": None})
    hooks = receive.receive_hooks(choice)
    assert [(h.name, h.exists, h.kind) for h in hooks] == [(n, True, "tp_btf") for n in RECEIVES]
    absent = receive._prove_alone("dev_rx", "no_such_tracepoint", False, receive.loader.OBJECT)
    assert absent.kind is None and absent.refused == [
        "not in this kernel (no net:no_such_tracepoint)"
    ]


def test_fragments_per_datagram() -> None:
    assert RxSelfTest("napi", 1, 8192, 1500).fragments == 6
    assert RxSelfTest("napi", 1, 8192, 9000).fragments == 1
    assert RxSelfTest("napi", 1, 1472, 1500).fragments == 1
    assert RxSelfTest("napi", 1, 1473, 1500).fragments == 2
