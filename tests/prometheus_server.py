"""A real Prometheus server (Debian's package) on loopback, for the metrics tests:
it scrapes the given targets every second and answers PromQL over its HTTP API."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BINARY = "prometheus"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(targets: Sequence[str]) -> str:
    jobs = [
        {
            "job_name": "stackprof",
            "scrape_interval": "1s",
            "scrape_timeout": "900ms",
            "static_configs": [{"targets": list(targets)}],
        }
    ]
    # JSON is YAML: no YAML library needed.
    return json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs})


class Prometheus:
    """A running server: query() evaluates PromQL at the server's now."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())

    def query(self, promql: str) -> list[dict[str, Any]]:
        doc = self.get("/api/v1/query", query=promql)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def targets_up(self) -> int:
        return sum(1 for r in self.query("up") if r["value"][1] == "1")

    def wait_scraped(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.targets_up() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus: fewer than {count} targets up in {timeout} s")
            time.sleep(0.5)


@contextlib.contextmanager
def running(targets: Sequence[str], timeout: float = 30.0) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port) every second, removed afterwards."""
    if shutil.which(BINARY) is None:
        raise RuntimeError("prometheus is not installed (setup.sh installs Debian's package)")
    folder = Path(tempfile.mkdtemp(prefix="stackprof-prom-"))
    port = free_port()
    (folder / "prometheus.yml").write_text(_config(targets))
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "log").open("w"),
    )
    try:
        server = Prometheus(port)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{server.base}/-/ready", timeout=2).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(folder / 'log').read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
