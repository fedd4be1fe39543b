"""The fleet story end to end: two stackprof instances, each the only one tracing its
"host" (one namespace of a two-namespace topology), serve /metrics; a real Prometheus
(Debian's package) scrapes both every second while a workload runs between them; its
PromQL answers agree with `stackprof merge` of the two hosts' saved runs. A run
that goes on until stopped saves one file per interval, the last one on SIGTERM. And
a traced run's `_sum` is the exact sum the kernel recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from profiler import abi
from profiler.buckets import bucket_bounds
from profiler.collector import copy_stats
from profiler.export import export
from profiler.loader import Tracer, choose_hooks, make_config
from profiler.merge import merge_files
from profiler.metrics import LATENCY_BOUNDS_NS
from profiler.run import Run
from profiler.session import finish
from servers.topology import Topology
from servers.workload import Workload
from tests.prometheus_server import free_port, running

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

PORT = 7000
WORKLOAD_S = 6
ATTACH_S = 40
# profiler.metrics: a quantile is off by at most a quarter of its value, or lies in
# [0, 256 ns] below the first bound.
QUARTER = 0.25
FIRST_BOUND_NS = LATENCY_BOUNDS_NS[0]


def attach(out: Path, netns: str, metrics_port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "profiler", "attach", "--ports", str(PORT), "--netns", netns]
        + ["--metrics", f"127.0.0.1:{metrics_port}", "--no-live", *extra]
        + ["--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_serving(port: int, timeout: float = 60.0) -> None:
    """Until the endpoint serves a run (the first refresh comes a second after tracing starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                if b"stackprof_datagrams_total" in reply.read():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no metrics on port {port} after {timeout} s")


@pytest.fixture
def topology() -> Iterator[Topology]:
    with Topology(1500) as topo:
        yield topo


def finished(proc: subprocess.Popen[str], timeout: float) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def test_prometheus_over_two_hosts_agrees_with_merge(topology: Topology, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    runs = [tmp_path / "client-host.json", tmp_path / "server-host.json"]
    hosts = [topology.client_ns, topology.server_ns]
    procs = [
        attach(run, ns, port, "--duration", str(ATTACH_S))
        for run, ns, port in zip(runs, hosts, ports, strict=True)
    ]
    try:
        for port in ports:
            wait_serving(port)
        with running([f"127.0.0.1:{p}" for p in ports]) as prom:
            prom.wait_scraped(2)
            time.sleep(2)  # a scrape of each before any traffic: rate() then sees all of it
            with Workload(topology, clients=2, duration=WORKLOAD_S, port=PORT) as load:
                load.wait()
            time.sleep(4)  # the last counts scraped
            # The buckets as scraped last, summed over both hosts: every count since each
            # attach began (rate() would extrapolate each bucket's series on its own, by
            # when it first appeared, and move the quantile by more than a bucket).
            p50 = prom.query(
                "histogram_quantile(0.5, sum by (le, stage) ("
                'stackprof_stage_latency_seconds_bucket{path="response"}))'
            )
            kinds = prom.query("sum by (path, kind) (stackprof_datagrams_total)")
            missed = prom.query("sum by (reason) (stackprof_missed_total)")
            sums = prom.query("sum by (path, stage) (stackprof_stage_latency_seconds_sum)")
        for proc in procs:
            finished(proc, ATTACH_S + 30)
    finally:
        for proc in procs:
            proc.kill() if proc.poll() is None else None
            proc.wait()
    merged = merge_files(runs)
    promql_p50 = {r["metric"]["stage"]: float(r["value"][1]) * 1e9 for r in p50}
    assert {"total", "send", "frag_train", "sock_wait"} <= set(promql_p50)
    for stage, value in promql_p50.items():
        exact = merged.stage("response", stage).get_value_at_percentile(50)
        assert abs(value - exact) <= max(QUARTER * exact, FIRST_BOUND_NS), (stage, value, exact)
    summed = {(r["metric"]["path"], r["metric"]["kind"]): float(r["value"][1]) for r in kinds}
    for path in ("request", "response"):
        for kind in ("traced", "kernel_sent", "kernel_fragmented", "kernel_delivered"):
            assert summed[(path, kind)] == merged.datagrams[path][kind], (path, kind)
        assert merged.datagrams[path]["traced"] > 100
    by_reason = {r["metric"]["reason"]: float(r["value"][1]) for r in missed}
    for reason in ("flight_full", "pair_mismatch", "thread_slot"):
        assert by_reason[reason] == merged.missed[reason]
    # _sum is exact: both hosts' sums add up to the merged runs' kernel sums.
    by_stage = {(r["metric"]["path"], r["metric"]["stage"]): float(r["value"][1]) for r in sums}
    assert by_stage.keys() == merged.sums.keys()
    for key, total_ns in merged.sums.items():
        assert by_stage[key] == pytest.approx(total_ns / 1e9, rel=1e-12), key


def test_until_stopped_saves_each_interval_and_the_last_on_sigterm(
    topology: Topology, tmp_path: Path
) -> None:
    folder = tmp_path / "intervals"
    port = free_port()
    proc = attach(folder, topology.server_ns, port, "--duration", "0", "--save-every", "5s")
    try:
        wait_serving(port)
        with Workload(topology, clients=2, duration=12, port=PORT) as load:
            load.wait()
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    files = sorted(folder.glob("*.json"))
    assert len(files) >= 3, err  # >= 12 s of traffic cut every 5 s, then the last part
    parts = [Run.load(f) for f in files]
    assert [p.meta["interval"] for p in parts] == list(range(len(parts)))
    assert all(0 < p.meta["duration_s"] <= 7 for p in parts[:-1])
    whole = merge_files(files)
    responses = whole.datagrams["response"]  # the clients' namespace is off the traced host
    assert responses["send_only"] > 100
    assert whole.stage("response", "total").get_total_count() == responses["send_only"]
    assert sum(p.datagrams["response"]["kernel_sent"] for p in parts) == responses["kernel_sent"]
    assert json.loads(json.dumps(whole.summary()))["meta"]["merged_from"]


def test_trace_serves_its_transport_as_a_label(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "profiler", "trace", "--transport", "udp", "--mtu", "1500"]
        + ["--duration", "4", "--clients", "2", "--no-live", "--out", str(tmp_path / "t.json")]
        + ["--metrics", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_serving(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        finished(proc, 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 'transport="udp"' in text and 'stage="total"' in text


def _latency_samples(text: str, suffix: str) -> dict[tuple[str, str], float]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {
        (s.labels["path"], s.labels["stage"]): s.value
        for s in families["stackprof_stage_latency_seconds"].samples
        if s.name.endswith(suffix)
    }


def test_latency_sum_is_the_exact_sum_the_kernel_recorded(
    topology: Topology, tmp_path: Path
) -> None:
    config = make_config(PORT, PORT, netns=list(topology.netns_inodes()))
    with Tracer(config, choose_hooks()) as tracer:
        with Workload(topology, clients=2, duration=3, port=PORT) as load:
            load.wait()
        run = finish(tracer, Run(meta={"transport": "udp"}))  # detached: at rest
        stats = copy_stats(tracer)
    saved = Run.load(run.save(tmp_path / "run.json"))
    text = export(saved, tmp_path / "run.prom").read_text()
    sums, counts = _latency_samples(text, "_sum"), _latency_samples(text, "_count")
    assert counts[("response", "total")] > 100 and set(sums) == set(run.stages)
    means = {(r["path"], r["stage"]): r["mean_us"] for r in saved.stage_rows()}
    for (path, stage), value in sums.items():
        row = abi.hist_index(path, stage)
        kernel = int(stats.sum[row])
        assert value == kernel / 1e9 and saved.sums[(path, stage)] == kernel
        filled = [(i, int(n)) for i, n in enumerate(stats.hist[row]) if n]
        count = sum(n for _, n in filled)
        assert counts[(path, stage)] == count
        # Each value lies in its bucket: count x mean between the buckets' bounds.
        low = sum(n * bucket_bounds(i)[0] for i, n in filled)
        high = sum(n * sum(bucket_bounds(i)) for i, n in filled)
        assert low <= kernel < high, (path, stage, low, kernel, high)
        assert means[(path, stage)] == round(kernel / count / 1000, 3)
    # Fragments per datagram are known from the sizes (512-byte requests in 1,
    # 8192-byte responses in 6 at MTU 1500): the kernel's sum is count x that mean.
    for path, per_datagram in (("request", 1), ("response", 6)):
        row = abi.hist_index(path, "frags")
        datagrams = sum(int(n) for n in stats.hist[row])
        assert datagrams > 100 and int(stats.sum[row]) == per_datagram * datagrams
