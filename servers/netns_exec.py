"""Run ``python -m servers.<module>`` inside a network namespace, and make sure it dies.

The parent side (:class:`NetnsProcess`) starts the child with ``ip netns
exec`` (which execs, so the child's pid is the Popen pid) in a process group of
its own, so that one ``killpg`` also reaches whatever the child forked. The
child side (:func:`child_setup`) pins the child to a CPU and asks the kernel to
send it SIGTERM when the parent dies, so a SIGKILLed profiler leaves nothing
running (``topology.remove_leftovers`` is the second line of defence).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

PARENT_ENV = "STACKPROF_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)


def die_with_parent(expected_parent: int | None, sig: int = signal.SIGTERM) -> None:
    """Get sig when the parent (thread) exits; exit now if it already has."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        sys.exit(f"parent {expected_parent} gone before start")


def child_setup(cpu: int | None) -> None:
    """What every workload process does first: tie its life to its parent, pin itself."""
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent else None)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class NetnsProcess:
    """One workload process in a namespace (None: the caller's); a context manager that
    always kills it.

    Its parent-death signal fires when the *thread* that started it exits:
    start it from a thread that outlives it (the main thread, normally).
    """

    def __init__(
        self, ns: str | None, module: str, args: Sequence[str] = (), cpu: int | None = None
    ) -> None:
        self.ns = ns
        self.module = module
        self.argv = ["ip", "netns", "exec", ns] if ns else []  # None: this namespace
        self.argv += [sys.executable, "-m", f"servers.{module}"]
        self.argv += list(args) + ([] if cpu is None else ["--cpu", str(cpu)])
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - read after the child died
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def _popen(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"servers.{self.module} not started")
        return self._proc

    def start(self) -> NetnsProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid())})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO_ROOT, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            start_new_session=True,
            env=env,
        )
        return self

    def __enter__(self) -> NetnsProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def running(self) -> bool:
        return self._popen.poll() is None

    def read_line(self, timeout: float) -> str:
        """The next stdout line; TimeoutError, or RuntimeError if the process ended first."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"servers.{self.module}: no output in {timeout} s")
            if not self._read_some(remaining):
                raise RuntimeError(f"servers.{self.module} exited: {self.describe_exit()}")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _read_some(self, timeout: float) -> bool:
        """Append what stdout has within timeout; False at end of file."""
        stdout = self._popen.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(stdout.fileno(), 65536)
        self._buffer += chunk
        return bool(chunk)

    def finish(self, timeout: float) -> str:
        """Wait for the process to exit; return the rest of its stdout."""
        deadline = time.monotonic() + timeout
        while self._read_some(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"servers.{self.module} still running after {timeout} s")
        try:
            self._popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"servers.{self.module} did not exit in {timeout} s") from exc
        out, self._buffer = self._buffer, b""
        return out.decode()

    def signal(self, sig: int) -> None:
        """Send sig to the process only (not its group), if it still runs."""
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the leader; safe to call twice."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def stderr_text(self, limit: int = 4000) -> str:
        """The tail of what the process wrote to stderr."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def describe_exit(self) -> str:
        code = self._popen.poll()
        return f"exit status {code}; stderr: {self.stderr_text().strip() or '(empty)'}"
