"""sockperf (Debian's package) as the third-party traffic of the root tests that run
``stackprof attach`` on traffic it did not start: sockperf's server in a namespace, and
the wait until attach watches (its ``--metrics`` endpoint serves a run)."""

from __future__ import annotations

import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator

from faults import in_netns, netns_path, wait_for


def serving(port: int) -> bool:
    """Whether attach's /metrics shows a refreshed run: its programs are attached."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
            return b"stackprof_info" in reply.read()
    except OSError:
        return False


def attach_ready(proc: subprocess.Popen[str], metrics_port: int, timeout: float = 60) -> bool:
    """Wait until attach (proc, serving --metrics on metrics_port) watches, or has exited,
    so that traffic starts only once it is traced; whether either came in time."""
    return wait_for(lambda: serving(metrics_port) or proc.poll() is not None, timeout, 0.1)


def port_bound(netns: str, port: int) -> bool:
    """Whether a UDP socket in netns (a name or a path) is bound to port."""
    return bool(in_netns(netns, "ss", "-Hlun", f"sport = :{port}").strip())


@contextlib.contextmanager
def sockperf_server(netns: str, addr: str, port: int) -> Iterator[None]:
    """``sockperf sr`` on addr:port in netns, bound before this yields; stopped at exit."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path(netns)}", "sockperf", "sr", "-i", addr, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: port_bound(netns, port), 10, 0.1), "sockperf server did not bind"
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
