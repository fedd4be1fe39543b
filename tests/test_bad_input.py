"""Bad input to any argument of any command is refused before any work starts: one line on
stderr, exit 2, nothing written. A target that goes away while attach runs ends the run,
saved, with a one-line note; an output that cannot be written at the end leaves the run
under traces/, and the message says where."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler import cli
from profiler.phases import PAUSE_ENV
from profiler.run import Run

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "traces" / "fixtures" / "udp-mtu1500-cpu0.json"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: BPF and network namespaces")
NO_CPU = str(max(os.sched_getaffinity(0)) + 1)


def no_such_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with a saved run, a folder, a non-run file, a FIFO and a
    half-run; the signal handlers main() sets are put back afterwards."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.json").write_bytes(RUN.read_bytes())
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.txt").write_text("not a run\n")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "half.json").write_text(json.dumps({"format": "stackprof-run", "version": 1}))
    os.mkfifo(tmp_path / "fifo")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield tmp_path
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def thread_id() -> tuple[int, threading.Event]:
    """The id of a thread (not a process) of this test, alive until the event is set."""
    stop = threading.Event()
    ids: list[int] = []
    ready = threading.Event()

    def body() -> None:
        ids.append(threading.get_native_id())
        ready.set()
        stop.wait(30)

    threading.Thread(target=body, daemon=True).start()
    ready.wait(5)
    return ids[0], stop


BAD: list[tuple[str, ...]] = [
    (),
    ("nosuch",),
    ("trace", "--bogus"),
    ("trace", "--json", "/missing-dir/x.json"),
    ("trace", "--json", "folder"),
    ("trace", "--json", "fifo"),
    ("trace", "--out", "/missing-dir/x.json"),
    ("trace", "--out", "run.json", "--json", "./run.json"),
    ("trace", "--transport", "udp,tcp", "--out", "text.txt"),
    ("trace", "--server-cpu", NO_CPU),
    ("trace", "--client-cpu", NO_CPU),
    ("trace", "--server-cpu", "-1"),
    ("trace", "--duration", "0"),
    ("trace", "--duration", "-1"),
    ("trace", "--duration", "nan"),
    ("trace", "--duration", "86401"),
    ("trace", "--mtu", "67"),
    ("trace", "--mtu", "65536"),
    ("trace", "--clients", "0"),
    ("trace", "--clients", "513"),
    ("trace", "--request-size", "15"),
    ("trace", "--response-size", "65508"),
    ("trace", "--transport", "quic"),
    ("trace", "--transport", ","),
    ("trace", "--port", "0"),
    ("trace", "--skip", "dev_queue"),
    ("trace", "--skip", "no_such_point"),
    ("trace", "--hooks", "tp_btf"),
    ("trace", "--hooks", "xdp"),
    ("trace", "--metrics", "70000"),
    ("trace", "--metrics", "host.invalid:9464"),
    ("trace", "--batch", "0"),
    ("trace", "--batch-timeout-ms", "0"),
    ("trace", "--frames-per-block", "0"),
    ("trace", "--block-timeout-ms", "inf"),
    ("trace", "--sample", "0"),
    ("trace", "--sample", "-4"),
    ("trace", "--sample", "1.5"),
    ("trace", "--sample", "4294967296"),
    ("trace", "--detail", "fine"),
    ("trace", "--detail", "lean", "--skip", "sk_enqueue"),
    ("attach",),
    ("attach", "--ports", "9-2"),
    ("attach", "--ports", "0"),
    ("attach", "--ports", "70000"),
    ("attach", "--ports", "a-b"),
    ("attach", "--ports", "7000", "--pid", str(no_such_pid())),
    ("attach", "--ports", "7000", "--pid", "0"),
    ("attach", "--ports", "7000", "--netns", "no-such-namespace"),
    ("attach", "--ports", "7000", "--netns", ","),
    ("attach", "--ports", "7000", "--netns", "/dev/null"),
    ("attach", "--ports", "7000", "--netns", "fifo"),
    ("attach", "--ports", "7000", "--netns", "/proc/self/ns/mnt"),
    ("attach", "--ports", "7000", "--cgroup", "/no/such/cgroup"),
    ("attach", "--ports", "7000", "--cgroup", "folder"),
    ("attach", "--ports", "7000", "--save-every", "0"),
    ("attach", "--ports", "7000", "--save-every", "10x"),
    ("attach", "--ports", "7000", "--save-every", "30s"),  # without --duration 0
    ("attach", "--ports", "7000", "--duration", "0", "--out", "text.txt"),
    ("attach", "--ports", "7000", "--json", "folder"),
    ("attach", "--ports", "7000", "--out", "/missing-dir/run.json"),
    ("attach", "--ports", "7000", "--skip", "recv_return"),
    ("attach", "--ports", "7000", "--sample", "0"),
    ("attach", "--ports", "7000", "--sample", "x"),
    ("attach", "--ports", "7000", "--detail", "LEAN"),
    ("report",),
    ("report", "missing.json"),
    ("report", "folder"),
    ("report", "fifo"),
    ("report", "/dev/null"),
    ("report", "text.txt"),
    ("report", "other.json"),
    ("report", "half.json"),
    ("compare", "run.json"),
    ("compare", "run.json", "missing.json"),
    ("compare", "folder", "run.json"),
    ("compare", "run.json", "run.json", "--json", "./run.json"),
    ("export", "run.json", "/missing-dir/x.csv"),
    ("export", "run.json", "out.xlsx"),
    ("export", "run.json", "folder"),
    ("export", "run.json", "run.json"),
    ("export", "missing.json", "out.csv"),
    ("export", "half.json", "out.csv"),
    ("merge", "run.json"),
    ("merge", "run.json", "-o", "/missing-dir/m.json"),
    ("merge", "run.json", "-o", "folder"),
    ("merge", "run.json", "-o", "run.json"),
    ("merge", "run.json", "./run.json", "-o", "m.json"),
    ("merge", "text.txt", "-o", "m.json"),
    ("doctor", "--bogus"),
]


def one_line_refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """main(argv): must exit 2 with one line on stderr; that line."""
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, (argv, status, err)
    assert err.count("\n") == 1 and err.startswith("stackprof: error:"), (argv, err)
    return err


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a) or "(none)")
def test_bad_input_is_refused_with_one_line(
    argv: tuple[str, ...], place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in place.iterdir())
    one_line_refusal(list(argv), capsys)
    assert sorted(p.name for p in place.iterdir()) == before  # nothing written, no traces/


def test_a_pid_that_is_a_thread_is_refused(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tid, stop = thread_id()
    try:
        err = one_line_refusal(["attach", "--ports", "7000", "--pid", str(tid)], capsys)
    finally:
        stop.set()
    if ROOT:
        assert f"--pid {os.getpid()}" in err


def test_a_metrics_port_in_use_is_refused(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_refusal(["trace", "--metrics", f"127.0.0.1:{port}"], capsys)


def test_more_namespaces_than_the_filter_holds_are_refused(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five distinct network namespaces (the kernel side holds four)."""
    sleepers = [
        subprocess.Popen(["unshare", "--net", "sleep", "30"]) for _ in range(5)
    ]  # fmt: skip
    try:
        paths = [f"/proc/{p.pid}/ns/net" for p in sleepers]
        deadline = time.monotonic() + 10
        while len({os.stat(p).st_ino for p in paths}) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        err = one_line_refusal(["attach", "--ports", "7000", "--netns", ",".join(paths)], capsys)
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    if ROOT:
        assert "1 to 4 namespaces, not 5" in err


def stackprof(*args: str, cwd: Path, timeout: float = 120, **env: str) -> tuple[int, str, float]:
    """The real command in a process of its own: status, stderr, seconds taken."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


REPORTED = [
    ("trace", "--json", "/missing-dir/x.json"),
    ("export", str(RUN), "/missing-dir/x.csv"),
    ("trace", "--server-cpu", NO_CPU),
    ("attach", "--ports", "7000", "--pid", str(no_such_pid())),
]


@needs_root
@pytest.mark.parametrize("argv", REPORTED, ids=lambda a: " ".join(a[:2]))
def test_the_four_reported_inputs_are_refused_before_work(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    """Each ran its whole duration, or died with a traceback, or traced nothing silently."""
    status, err, took = stackprof(*argv, cwd=tmp_path)
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("stackprof: error:"), err
    assert took < 8, f"refused after {took:.1f} s: not before the work (10 s by default)"
    assert not list(tmp_path.iterdir())


def wait_paused(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until proc stopped itself at the phase its STACKPROF_PAUSE_AT names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.pid} never paused")


def start(cwd: Path, *args: str, pause: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if pause:
        env[PAUSE_ENV] = pause
    return subprocess.Popen(
        [sys.executable, "-m", "profiler", *args, "--no-live"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finished(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@needs_root
def test_a_pid_that_exits_ends_the_run_saved(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    out = tmp_path / "run.json"
    proc = start(
        tmp_path, "attach", "--ports", "7000", "--pid", str(sleeper.pid), "--duration", "60",
        "--out", str(out), pause="load",
    )  # fmt: skip
    try:
        wait_paused(proc)
    finally:
        sleeper.kill()
        sleeper.wait()
    proc.send_signal(signal.SIGCONT)
    status, err = finished(proc)
    assert status == 0, err
    note = [line for line in err.splitlines() if "exited" in line]
    assert len(note) == 1 and f"process {sleeper.pid} exited" in note[0], err
    assert f"process {sleeper.pid} exited" in Run.load(out).meta["ended"]


@needs_root
def test_a_deleted_namespace_ends_the_run_saved(tmp_path: Path) -> None:
    name = f"stackprof-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    out = tmp_path / "run.json"
    try:
        proc = start(
            tmp_path, "attach", "--ports", "7000", "--netns", name, "--duration", "60",
            "--out", str(out), pause="load",
        )  # fmt: skip
        wait_paused(proc)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    proc.send_signal(signal.SIGCONT)
    status, err = finished(proc)
    assert status == 0, err
    assert f"network namespace {name} was deleted" in Run.load(out).meta["ended"], err


@needs_root
def test_an_output_that_cannot_be_written_at_the_end_goes_under_traces(tmp_path: Path) -> None:
    """The folder of --out and --json becomes a file while the run goes on: the run is
    saved under traces/, each failure said in one line naming where it went, exit 1."""
    folder = tmp_path / "out"
    folder.mkdir()
    proc = start(
        tmp_path, "trace", "--duration", "1", "--clients", "2", "--mtu", "1500",
        "--out", str(folder / "run.json"), "--json", str(folder / "summary.json"), pause="load",
    )  # fmt: skip
    try:
        wait_paused(proc)
        folder.rmdir()
        folder.write_text("in the way\n")
    finally:
        proc.send_signal(signal.SIGCONT)
    status, err = finished(proc)
    assert status == 1, err
    saved = list((tmp_path / "traces").glob("*.json"))
    assert len(saved) == 1 and Run.load(saved[0]).datagrams["request"]["traced"] > 0
    where = f"the run is saved as traces/{saved[0].name}"
    problems = [line for line in err.splitlines() if line.startswith("stackprof: cannot write")]
    assert len(problems) == 2 and all(where in line for line in problems), err
    assert not [p for p in tmp_path.rglob("*.tmp")]
