"""A run leaves nothing behind, however it ends: namespaces, veths, BPF, processes.

Each test starts the real CLI, waits until its topology exists, its BPF links
are attached and its workload runs, ends it one way (normal exit, Ctrl-C,
SIGTERM, SIGKILL) and then looks at the whole machine from outside.

Ownership is read from the kernel, not guessed from a baseline, so that other
runs on the machine at the same time cannot confuse the checks: the BPF links
and programs of a run are those whose fds the CLI process holds
(``/proc/PID/fdinfo``: ids are never reused), its workload processes are those
started with ``STACKPROF_PARENT_PID=<cli pid>`` in their environment (forked
clients inherit it; a zombie's environment reads empty, and a zombie holds nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers.netns_exec import PARENT_ENV
from servers.topology import NETNS_DIR, OWNERS_DIR, remove_leftovers

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

REPO = Path(__file__).resolve().parent.parent
PROGRAM_PREFIXES = ("fentry_", "fexit_", "kprobe_", "kretprobe_", "raw_tp_", "tp_btf_", "tp_sys_")
START_TIMEOUT_S = 60.0  # hook probing, topology and workload start on a busy machine
EXIT_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 15.0  # deferred BPF frees, parent-death signals, namespace teardown
CLIENTS = 2
WORKERS = CLIENTS + 2  # the server, the load generator and the clients it forks


@dataclass
class Holdings:
    """What one live run holds, seen from outside while it runs."""

    links: set[int]
    programs: set[int]
    workers: set[int]


def poll(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """Wait until condition() holds, bounded: a clear failure instead of a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout} s")
        time.sleep(0.05)


def bpftool(kind: str) -> list[dict[str, Any]]:
    """`bpftool -j prog|link show` as a list (empty when nothing is loaded).

    A program or link freed between bpftool listing its id and opening it makes
    bpftool fail; other runs on the machine come and go, so a few tries are made."""
    for _ in range(10):
        proc = subprocess.run(
            ["bpftool", "-j", kind, "show"], capture_output=True, text=True, timeout=30
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout or "[]") or []
        time.sleep(0.05)
    raise AssertionError(f"bpftool {kind} show failed: {proc.stderr}{proc.stdout}")


def stackprof_programs() -> dict[int, str]:
    """Loaded programs with a stackprof program name, by id."""
    return {
        p["id"]: p.get("name", "")
        for p in bpftool("prog")
        if p.get("name", "").startswith(PROGRAM_PREFIXES)
    }


def bpf_fds(pid: int) -> tuple[set[int], set[int]]:
    """(link ids, program ids) of the BPF links and programs process pid holds."""
    links: set[int] = set()
    programs: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target not in ("anon_inode:bpf_link", "anon_inode:bpf-prog"):
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                fields = dict(re.findall(r"^(\w+):\s*(\S+)", info, re.MULTILINE))
                if "link_id" in fields:
                    links.add(int(fields["link_id"]))
                if "prog_id" in fields:
                    programs.add(int(fields["prog_id"]))
    return links, programs


def workers_of(cli_pid: int) -> set[int]:
    """Live processes a run started (servers, load generator, its clients)."""
    mark = f"{PARENT_ENV}={cli_pid}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                    found.add(int(entry.name))
    return found


def namespaces_of(pid: int) -> list[str]:
    """Named namespaces of the run whose CLI had this pid."""
    names = os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []
    return sorted(n for n in names if re.fullmatch(rf"sp{pid}-(cli|srv)", n))


def owner_files_of(pid: int) -> list[str]:
    names = os.listdir(OWNERS_DIR) if OWNERS_DIR.is_dir() else []
    return sorted(n for n in names if n.startswith(f"sp{pid}-"))


def all_netns() -> Iterator[list[str]]:
    """An `ip` command prefix for every network namespace on the machine: the root one,
    the named ones, and any other a process is in."""
    yield ["ip"]
    seen = {os.stat("/proc/self/ns/net").st_ino}
    for name in os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []:
        with contextlib.suppress(OSError):
            seen.add(os.stat(NETNS_DIR / name).st_ino)
            yield ["ip", "-n", name]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                inode = os.stat(f"/proc/{entry.name}/ns/net").st_ino
                if inode not in seen:
                    seen.add(inode)
                    yield ["nsenter", f"--net=/proc/{entry.name}/ns/net", "ip"]


def veths_of(pid: int) -> list[str]:
    """Veth interfaces named after pid, in any namespace."""
    found = []
    for prefix in all_netns():
        proc = subprocess.run(
            [*prefix, "-o", "link", "show", "type", "veth"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        found += re.findall(rf"^\d+: (sp{pid}[cs])[@:]", proc.stdout, re.MULTILINE)
    return found


def start(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the CLI as a terminal's foreground job would: its own process group
    (so Ctrl-C can go to that group and nothing else, and cleanup can kill it),
    SIGINT at its default disposition even if the test runner ignores it."""
    cmd = [sys.executable, "-m", "profiler", "trace", "--mtu", "1500", "--no-live"]
    cmd += ["--clients", str(CLIENTS), "--out", str(tmp / "run.json"), *args]
    with (tmp / "stdout").open("wb") as out, (tmp / "stderr").open("wb") as err:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def wait_running(proc: subprocess.Popen[bytes]) -> Holdings:
    """Block until the run's namespaces exist, its workload runs and its stackprof
    BPF links are attached (the tracer attaches before the workload starts)."""
    holdings = Holdings(set(), set(), set())

    def running() -> bool:
        assert proc.poll() is None, f"CLI exited early with {proc.returncode}"
        if len(namespaces_of(proc.pid)) != 2:
            return False
        holdings.workers = workers_of(proc.pid)
        links, programs = bpf_fds(proc.pid)
        names = stackprof_programs()
        holdings.links = links
        holdings.programs = {p for p in programs if p in names}
        attached = {p["prog_id"] for p in bpftool("link") if p["id"] in links}
        return len(holdings.workers) >= WORKERS and bool(attached & holdings.programs)

    poll(f"run {proc.pid} traced and running", running, START_TIMEOUT_S)
    return holdings


def assert_nothing_left(pid: int, holdings: Holdings) -> None:
    """No namespace, veth, owner record, BPF link or program, or workload process of
    run pid remains (each polled, bounded: teardown is asynchronous in the kernel)."""
    poll(f"namespaces of {pid} gone", lambda: not namespaces_of(pid), GONE_TIMEOUT_S)
    poll(f"veths of {pid} gone", lambda: not veths_of(pid), GONE_TIMEOUT_S)
    assert not owner_files_of(pid)
    assert_bpf_released(holdings)
    assert_workers_gone(pid)


def assert_bpf_released(holdings: Holdings) -> None:
    def released() -> bool:
        links = {p["id"] for p in bpftool("link")}
        return not holdings.links & links and not holdings.programs & set(stackprof_programs())

    poll(f"BPF links {sorted(holdings.links)} and programs released", released, GONE_TIMEOUT_S)


def assert_workers_gone(pid: int) -> None:
    poll(f"workload processes of {pid} gone", lambda: not workers_of(pid), GONE_TIMEOUT_S)


def cleanup(proc: subprocess.Popen[bytes]) -> None:
    """Whatever happened: kill the CLI's group and its workers, sweep the leftovers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for worker in workers_of(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
    remove_leftovers()


def stderr_of(tmp: Path) -> str:
    return (tmp / "stderr").read_text(errors="replace")


@pytest.mark.parametrize("end", ["exit", "ctrl-c", "sigterm", "sighup"])
def test_run_leaves_nothing_behind(end: str, tmp_path: Path) -> None:
    """A run that ends normally or is interrupted tears down everything it made.

    Ctrl-C goes to the CLI's process group, as a terminal sends it to the
    foreground job (the workload runs in sessions of its own, out of its reach);
    SIGTERM goes to the CLI process only, as `kill PID` does; SIGHUP too, as when
    the terminal or the ssh connection closes.
    """
    proc = start(tmp_path, "--duration", "2" if end == "exit" else "30")
    try:
        holdings = wait_running(proc)
        assert holdings.links and holdings.programs
        if end == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        elif end == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        elif end == "sighup":
            os.kill(proc.pid, signal.SIGHUP)
        status = proc.wait(timeout=EXIT_TIMEOUT_S)
        assert "saved " in stderr_of(tmp_path)
        saved = json.loads((tmp_path / "run.json").read_text())["summary"]
        if end == "exit":
            assert status == 0, stderr_of(tmp_path)
            assert "interrupted" not in saved["meta"]
        else:
            assert status == 130, stderr_of(tmp_path)
            assert "stackprof: interrupted" in stderr_of(tmp_path).splitlines()
            assert saved["meta"]["interrupted"] is True
            assert saved["datagrams"]["request"]["traced"] > 0
        assert_nothing_left(proc.pid, holdings)
    finally:
        cleanup(proc)


def test_sigkill_is_cleaned_up_by_the_kernel_and_the_next_run(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup: the kernel drops the BPF links with the fds, the
    workload dies of its parent-death signal, and the namespaces (pinned under
    /run/netns) stay until the next run sweeps them on start."""
    proc = start(tmp_path, "--duration", "30")
    try:
        holdings = wait_running(proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL
        assert_bpf_released(holdings)
        assert_workers_gone(proc.pid)
        following = tmp_path / "following"
        following.mkdir()
        nxt = start(following, "--duration", "1")
        try:
            assert nxt.wait(timeout=START_TIMEOUT_S + EXIT_TIMEOUT_S) == 0, stderr_of(following)
            assert not namespaces_of(proc.pid)
            assert not veths_of(proc.pid)
            assert not owner_files_of(proc.pid)
        finally:
            cleanup(nxt)
    finally:
        cleanup(proc)
