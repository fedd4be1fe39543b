"""The overhead benchmark's load: sockperf between the lab's two namespaces.

sockperf is C (Debian's package): unlike the lab's Python load generator, which was its own
bottleneck (``none`` spread 27% across rounds), it leaves the stack as the thing measured.
One server, pinned to the first CPU, lives as long as the lab; each run starts a client
in the client namespace, on the same CPU or on the second. The veth's MTU changes in place
between runs, so stackprof's namespace filter stays valid for the whole benchmark.

Figures come from sockperf itself (ping-pong: its latency percentiles, half a round trip;
its valid-duration message count) and from the namespaces' own UDP counters
(``/proc/net/snmp``: datagrams the applications read and sent), which count exactly what
crossed the veth whatever sockperf counts as warm-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from servers.topology import Topology, run_in_netns

MSG_SIZE = 8192
# sockperf sleeps 2 s before every test and ends ~0.2 s after it: what a run costs on top.
RUN_OVERHEAD_S = 2.3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PR_SET_PDEATHSIG = 1
Mark = Callable[[str], None]


class LoadError(RuntimeError):
    """sockperf failed, hung or printed something this module cannot read."""


@dataclass(frozen=True)
class Cell:
    """Where a run happens: the veth's MTU, and whether both ends share one CPU."""

    mtu: int
    cpus: int  # 1: server and client on one CPU; 2: each on its own

    @property
    def key(self) -> str:
        return f"mtu{self.mtu}-{self.cpus}cpu"

    @property
    def label(self) -> str:
        return f"MTU {self.mtu}, {'one CPU' if self.cpus == 1 else 'two CPUs'}"


@dataclass
class PingPong:
    """sockperf ping-pong's own figures: latency is half the round trip, in µs."""

    p50_us: float
    p99_us: float
    avg_us: float
    round_trips_per_s: float
    dropped: int


@dataclass
class Throughput:
    """A sockperf throughput run, counted by the namespaces' UDP counters."""

    seconds: float
    sent: int  # datagrams the client namespace sent
    received: int  # datagrams the server read

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def received_per_s(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0


@dataclass
class Udp:
    """The UDP counters of the lab's two namespaces together."""

    received: int  # InDatagrams: datagrams the applications read
    sent: int  # OutDatagrams

    def __sub__(self, other: Udp) -> Udp:
        return Udp(self.received - other.received, self.sent - other.sent)


def missing_tools() -> list[str]:
    """The programs the benchmark runs that are not installed."""
    return [t for t in ("sockperf", "taskset", "ip", "bpftool") if shutil.which(t) is None]


def cannot_run(prog: str) -> str | None:
    """Why a benchmark script cannot run here (one line), before any work; None if it can."""
    if os.geteuid() != 0:
        return f"{prog}: needs root (BPF, network namespaces)"
    missing = missing_tools()
    if missing:
        return f"{prog}: not installed: {', '.join(missing)} (setup.sh)"
    return None


def two_cpus() -> tuple[int, int]:
    """The server's CPU and the other one (the same one on a one-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets sig when the benchmark dies, even by SIGKILL."""

    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arm


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if not found:
        raise LoadError(f"sockperf printed no {pattern!r}:\n{text[-1500:]}")
    return float(found[1])


def parse_pingpong(text: str) -> PingPong:
    """sockperf ping-pong's summary: percentiles and the valid-duration message count."""
    text = _ANSI.sub("", text)
    runtime = _number(r"\[Valid Duration\] RunTime=([\d.]+) sec", text)
    received = _number(r"\[Valid Duration\].*ReceivedMessages=(\d+)", text)
    return PingPong(
        p50_us=_number(r"percentile 50\.000 =\s*([\d.]+)", text),
        p99_us=_number(r"percentile 99\.000 =\s*([\d.]+)", text),
        avg_us=_number(r"avg-latency=([\d.]+)", text),
        round_trips_per_s=received / runtime if runtime else 0.0,
        dropped=int(_number(r"# dropped messages = (\d+)", text)),
    )


def parse_throughput_seconds(text: str) -> float:
    """How long sockperf throughput sent for (its own measure of the test)."""
    return _number(r"Total of \d+ messages sent in ([\d.]+) sec", _ANSI.sub("", text))


def _read_marked(proc: subprocess.Popen[str], mark: Mark | None) -> str:
    """sockperf's output, whole, calling mark at the start and end of its test."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if mark and "Starting test" in line:
            mark("start")
        elif mark and "Test end" in line:
            mark("end")
    proc.wait()
    return "".join(lines)


def read_in_netns(ns: str, path: str) -> str:
    """A /proc file as namespace ns sees it (from a thread that entered it)."""
    text: list[str] = []
    run_in_netns(ns, lambda: text.append(Path(path).read_text()))
    return text[0]


def parse_udp(snmp: str) -> Udp:
    """InDatagrams and OutDatagrams from /proc/net/snmp's Udp lines."""
    names, values = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")][:2]
    row = dict(zip(names[1:], values[1:], strict=True))
    return Udp(int(row["InDatagrams"]), int(row["OutDatagrams"]))


class Lab:
    """The topology, its MTU and one sockperf server (pinned to the first CPU)."""

    def __init__(self, topo: Topology, port: int) -> None:
        self.topo = topo
        self.port = port
        self.mtu = topo.mtu
        self.server_cpu, self.other_cpu = two_cpus()
        self._server: subprocess.Popen[str] | None = None

    def __enter__(self) -> Lab:
        self._server = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.server_ns, "taskset", "-c", str(self.server_cpu)]
            + ["sockperf", "server", "-i", self.topo.server_ip, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it in order
            preexec_fn=die_with_parent(),
        )
        try:
            self._wait_listening()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the server (the topology's removal would too): nothing left running."""
        if self._server is not None:
            with contextlib.suppress(ProcessLookupError):
                self._server.kill()
            self._server.communicate(timeout=30)
            self._server = None

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Until the server's UDP socket is bound, or LoadError."""
        want = f":{self.port:04X} "
        deadline = time.monotonic() + timeout
        while True:
            if want in read_in_netns(self.topo.server_ns, "/proc/thread-self/net/udp"):
                return
            assert self._server is not None
            if self._server.poll() is not None or time.monotonic() > deadline:
                err = self._server.stderr.read() if self._server.stderr else ""
                raise LoadError(f"sockperf server did not start: {err.strip()[-500:]}")
            time.sleep(0.05)

    def set_mtu(self, mtu: int) -> None:
        """Both veth ends to mtu (a no-op when they are already)."""
        if mtu == self.mtu:
            return
        for ns, ifname in (
            (self.topo.client_ns, self.topo.client_if),
            (self.topo.server_ns, self.topo.server_if),
        ):
            subprocess.run(
                ["ip", "-n", ns, "link", "set", "dev", ifname, "mtu", str(mtu)],
                check=True,
                capture_output=True,
                timeout=30,
            )
        self.mtu = mtu

    def _udp(self, ns: str) -> Udp:
        return parse_udp(read_in_netns(ns, "/proc/thread-self/net/snmp"))

    def udp(self) -> Udp:
        """Both namespaces' UDP counters, summed."""
        client, server = self._udp(self.topo.client_ns), self._udp(self.topo.server_ns)
        return Udp(client.received + server.received, client.sent + server.sent)

    def _client(self, mode: str, cell: Cell, seconds: int, mark: Mark | None = None) -> str:
        """Run one sockperf client in the client namespace; its whole output. mark, if
        given, is called with "start" and "end" as sockperf starts and ends its test
        (not its 2 s of start-up): the window a counter should cover."""
        self.set_mtu(cell.mtu)
        cpu = self.server_cpu if cell.cpus == 1 else self.other_cpu
        argv = ["ip", "netns", "exec", self.topo.client_ns, "taskset", "-c", str(cpu)]
        argv += ["sockperf", mode, "-i", self.topo.server_ip, "-p", str(self.port)]
        argv += ["-t", str(seconds), "--msg-size", str(MSG_SIZE)]
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        ) as proc:
            watchdog = threading.Timer(seconds + 30, proc.kill)
            watchdog.start()
            try:
                text = _read_marked(proc, mark)
            finally:
                watchdog.cancel()
                proc.kill()
        if proc.returncode != 0:
            raise LoadError(f"sockperf {mode} exited {proc.returncode}: {text[-800:]}")
        return text

    def pingpong(self, cell: Cell, seconds: int, mark: Mark | None = None) -> PingPong:
        """Latency: one client, 8 KiB each way, the next only after the answer."""
        return parse_pingpong(self._client("ping-pong", cell, seconds, mark))

    def throughput(self, cell: Cell, seconds: int) -> Throughput:
        """Rate: the client sends 8 KiB datagrams as fast as it can; the server reads."""
        sent, received = self._udp(self.topo.client_ns).sent, self._udp(self.topo.server_ns)
        text = self._client("throughput", cell, seconds)
        time.sleep(0.1)  # the server reads what is still queued (InDatagrams counts reads)
        return Throughput(
            parse_throughput_seconds(text),
            self._udp(self.topo.client_ns).sent - sent,
            self._udp(self.topo.server_ns).received - received.received,
        )
