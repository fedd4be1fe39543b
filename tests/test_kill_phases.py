"""Nothing lost, nothing left: a run killed in any phase (topology set-up, attach, load,
save) leaves no half-written file and no state behind, and every file stackprof writes
appears whole or not at all.

The CLI is stopped in the phase by its test hook (``STACKPROF_PAUSE_AT``, see
``profiler/phases.py``: it stops itself with SIGSTOP there), then killed. After SIGTERM
nothing at all may be left, and a run killed while it measured or saved is saved
whole. After SIGKILL the kernel frees the BPF links and the workload dies with its
parent; the namespaces stay until the next run's sweep (``remove_leftovers``, which
every run does first), and the output folder holds no temporary and no partial file:
a file being written has no name until it is complete (O_TMPFILE).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler import atomic
from profiler.export import export
from profiler.phases import PAUSE_ENV, PHASES, uninterrupted
from profiler.run import Run
from servers.topology import remove_leftovers
from tests.test_run_lifecycle import (
    Holdings,
    assert_bpf_released,
    assert_nothing_left,
    assert_workers_gone,
    bpf_fds,
    cleanup,
    namespaces_of,
    owner_files_of,
    stackprof_programs,
    veths_of,
    workers_of,
)

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "traces" / "fixtures" / "udp-mtu1500-cpu0.json"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and namespaces")
PAUSE_TIMEOUT_S = 90.0


def start(tmp: Path, phase: str) -> subprocess.Popen[bytes]:
    out = tmp / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "profiler", "trace", "--mtu", "1500", "--clients", "2"]
    cmd += ["--duration", "2", "--no-live", "--out", str(out / "run.json")]
    cmd += ["--json", str(out / "summary.json")]
    with (tmp / "stderr").open("wb") as err:
        return subprocess.Popen(
            cmd,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), PAUSE_ENV: phase},
        )


def wait_paused(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp / "stderr").read_text()
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError(f"never paused: {(tmp / 'stderr').read_text()}")


def holdings_of(pid: int) -> Holdings:
    links, programs = bpf_fds(pid)
    return Holdings(links, programs & set(stackprof_programs()), workers_of(pid))


def output_files(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "out").iterdir())


@needs_root
@pytest.mark.parametrize("phase", PHASES)
def test_sigterm_in_each_phase_leaves_nothing(phase: str, tmp_path: Path) -> None:
    proc = start(tmp_path, phase)
    try:
        wait_paused(proc, tmp_path)
        held = holdings_of(proc.pid)
        time.sleep(1 if phase == "load" else 0)  # the kernel side counts on meanwhile
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=60) == 130, (tmp_path / "stderr").read_text()
        assert_nothing_left(proc.pid, held)
        files = output_files(tmp_path)
        if phase in ("load", "save"):  # something was measured: it is saved, whole
            assert files == ["run.json", "summary.json"], files
            run = Run.load(tmp_path / "out" / "run.json")
            assert run.datagrams["request"]["kernel_sent"] > 0
            json.loads((tmp_path / "out" / "summary.json").read_text())
        else:
            assert files == [], files
    finally:
        cleanup(proc)


@needs_root
@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_each_phase_leaves_no_file_and_the_next_run_sweeps(
    phase: str, tmp_path: Path
) -> None:
    proc = start(tmp_path, phase)
    try:
        wait_paused(proc, tmp_path)
        held = holdings_of(proc.pid)
        if phase in ("attach", "load"):
            assert held.links and held.programs
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert_bpf_released(held)
        assert_workers_gone(proc.pid)
        assert output_files(tmp_path) == []  # not even a temporary file
        remove_leftovers()  # what the next run does first
        assert not namespaces_of(proc.pid)
        assert not veths_of(proc.pid)
        assert not owner_files_of(proc.pid)
    finally:
        cleanup(proc)


def test_a_write_that_fails_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as out:
        out.write("half of the new one")
        raise RuntimeError("disk full, say")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["run.json"]


def test_without_o_tmpfile_a_named_temporary_is_used_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_tmpfile(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_tmpfile)
    target = tmp_path / "run.json"
    atomic.write_text(target, "whole")
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "other.json") as tmp:
        tmp.write_text("half")
        assert tmp.name.startswith(".other.json.") and tmp.name.endswith(".tmp")
        raise RuntimeError
    assert target.read_text() == "whole"
    assert os.listdir(tmp_path) == ["run.json"]


def test_every_writer_gets_a_whole_file(tmp_path: Path) -> None:
    """Exports by path (parquet) and by file object (csv), and a saved run."""
    run = Run.load(RUN)
    for suffix in ("csv", "parquet", "hlog", "json", "prom"):
        assert export(run, tmp_path / f"run.{suffix}").stat().st_size > 0
    run.save(tmp_path / "saved.json")
    assert Run.load(tmp_path / "saved.json").meta == run.meta
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert oct((tmp_path / "saved.json").stat().st_mode & 0o777) == "0o644"


class Interrupted(Exception):
    pass


def test_an_interrupt_during_a_write_waits_until_the_file_is_whole(tmp_path: Path) -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGTERM, interrupt)
    target = tmp_path / "run.json"
    try:
        with pytest.raises(Interrupted), atomic.atomic_open(target) as out:
            out.write("first half, ")
            os.kill(os.getpid(), signal.SIGTERM)
            out.write("second half")
        assert target.read_text() == "first half, second half"
        with pytest.raises(Interrupted), uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == ["run.json"]
