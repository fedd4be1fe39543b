"""The Lock Management Server workload (servers/lms*.py): its request routing, its
consistent-read copies and their verification, V3 blocks sized for requests; then (root)
every transport serving it across the veth pair, ``trace --workload lms``, and ``attach``
following a standalone ``lms serve`` it did not start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from command import stackprof

from profiler.transports import TRANSPORTS, rds_missing
from servers import lms, tpacket, v3_blocks
from servers.payload import Verdict
from servers.service import merge_server_reports
from servers.topology import Topology
from servers.workload import ServiceOptions, Workload

REPO = Path(__file__).resolve().parent.parent
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces")
HERE = tuple(t for t in TRANSPORTS if t != "rds" or rds_missing() is None)


def test_server_index_is_the_documented_hash() -> None:
    for file, block in [(0, 0), (3, 77), (15, 4095)]:
        expected = zlib.crc32(file.to_bytes(4, "big") + block.to_bytes(8, "big")) % 4
        assert lms.server_index(file, block, 4) == expected
    spread = Counter(lms.server_index(b % lms.FILES, b, 4) for b in range(4096))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 4096 / 4 * 0.8, "the hash spreads blocks over the servers"


def test_request_names_its_block() -> None:
    request = lms.build_request(7, 42, 3, 1234, 512)
    assert len(request) == 512
    assert lms.parse_request(request) == (3, 1234, 42)
    assert lms.parse_request(b"short") is None
    with pytest.raises(ValueError):
        lms.build_request(7, 42, 3, 1234, lms.REQUEST_MIN - 1)


def test_consistent_read_copy_is_verified() -> None:
    handler = lms.LmsHandler(rounds=3)
    response = handler.respond(lms.build_request(7, 42, 3, 1234, 512))
    assert response is not None and len(response) == lms.RESPONSE_SIZE == handler.response_size
    assert lms.verify_response(response, 7, 42, 3, 1234) is Verdict.OK
    assert lms.verify_response(response, 7, 43, 3, 1234) is Verdict.STALE
    assert lms.verify_response(response, 8, 42, 3, 1234) is Verdict.BAD
    assert lms.verify_response(response, 7, 42, 3, 1235) is Verdict.BAD
    corrupt = bytearray(response)
    corrupt[-100] ^= 1
    assert lms.verify_response(corrupt, 7, 42, 3, 1234) is Verdict.BAD
    assert handler.respond(b"\0" * 64) is None


def test_copy_depends_on_the_work_and_the_snapshot() -> None:
    block = lms.initial_block(1, 2)
    assert lms.consistent_read(block, 5, 0) == block, "no rounds: a plain copy"
    assert lms.consistent_read(block, 5, 4) != block
    assert lms.consistent_read(block, 5, 4) != lms.consistent_read(block, 6, 4)
    assert lms.consistent_read(block, 5, 4)[: lms.STAMP.size] == block[: lms.STAMP.size]


def test_calibration_reports_what_it_asked_and_got() -> None:
    cheap, dear = lms.calibrate(0), lms.calibrate(200)
    assert cheap.rounds == 0 and dear.rounds > 0
    assert dear.round_us > 0 and dear.expected_us > cheap.expected_us
    report = lms.make_handler(10).report()
    assert report["name"] == "lms" and report["serve_us"] == 10
    assert {"calibrated_us", "rounds", "round_us", "measured_us"} <= set(report)


def test_cache_keeps_blocks_and_evicts_the_oldest() -> None:
    handler = lms.LmsHandler(rounds=0, cache_blocks=2)
    for block in (1, 2, 1, 3):
        handler.respond(lms.build_request(0, block, 0, block, 64))
    assert handler.misses == 3 and handler.evictions == 1 and len(handler.cache) == 2


@pytest.mark.parametrize("requests", [1, 2, 7, 16, 32, 64, 100])
@pytest.mark.parametrize("request_size", [36, 512, 1400])
def test_v3_block_holds_exactly_its_requests(requests: int, request_size: int) -> None:
    """The kernel fills a block while offset + footprint < block end: exactly n fit."""
    frame_len = 14 + 28 + request_size
    block, reserve, footprint = v3_blocks.v3_request_geometry(requests, frame_len)
    assert block % tpacket.PAGE_SIZE == 0
    assert footprint == v3_blocks.v3_packet_footprint(frame_len, reserve)
    assert 48 + requests * footprint < block <= 48 + (requests + 1) * footprint
    cfg = v3_blocks.ring_config_for_requests(requests, frame_len)
    assert cfg.frames_per_block == requests and cfg.reserve == reserve
    assert cfg.frame_size % 16 == 0 and cfg.frame_nr == cfg.block_nr * cfg.slots_per_block


def test_server_reports_merge() -> None:
    one = {"datagrams": 10, "cpu_s": 0.5, "duration_s": 2.0, "mode": "echo", "ring": {"frames": 10}}
    two = {"datagrams": 30, "cpu_s": 1.0, "duration_s": 2.5, "mode": "echo", "ring": {"frames": 30}}
    merged = merge_server_reports([one, two])
    assert merged["datagrams"] == 40 and merged["cpu_s"] == 1.5 and merged["duration_s"] == 2.5
    assert merged["ring"] == {"frames": 40} and merged["per_server"] == [one, two]
    assert merge_server_reports([one]) is one


@root
@pytest.mark.root
@pytest.mark.parametrize("transport", HERE)
def test_lms_serves_every_transport(transport: str) -> None:
    """Two LMS servers, 3 clients each, requests hashed over both; every copy verified."""
    service = ServiceOptions.lms(servers=2, serve_us=10.0, think_us=200.0, blocks=256)
    with (
        Topology(9000) as topo,
        Workload(topo, transport=transport, clients=3, duration=1.5, service=service) as load,
    ):
        assert len(load.server_pids) == 2
        result = load.wait()
    server = result.server
    assert result.received > 20 and result.bad == 0 and result.errors == 0
    assert result.failed_clients == 0 and result.rtt.get_total_count() == result.received
    assert server["service"]["name"] == "lms" and server["service"]["rounds"] >= 0
    assert len(server["per_server"]) == 2
    assert all(s["requests"] > 0 for s in server["per_server"]), "the hash reaches both"
    assert server["requests"] == sum(s["requests"] for s in server["per_server"])
    assert server["bad_requests"] == 0 and server["service"]["served"] == server["requests"]
    assert result.received <= server["responses"] <= result.received + 6


@root
@pytest.mark.root
def test_trace_workload_lms_records_it(tmp_path: Path) -> None:
    proc = stackprof(
        "trace", "--workload", "lms", "--servers", "2", "--clients", "2", "--serve-us", "20",
        "--mtu", "1500", "--duration", "1.5", "--no-live", "--json", str(tmp_path / "s.json"),
        "--out", str(tmp_path / "run.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads((tmp_path / "s.json").read_text())
    meta = doc["meta"]
    assert meta["workload"] == "lms" and meta["lms"]["servers"] == 2
    assert meta["client"]["bad"] == 0 and meta["client"]["received"] > 20
    assert meta["server"]["service"]["name"] == "lms"
    request = doc["datagrams"]["request"]
    assert request["traced"] >= 0.9 * request["sent"], "both ports are traced"
    assert doc["datagrams"]["response"]["fragments_per_datagram"] == 6.0


@root
@pytest.mark.root
def test_attach_follows_a_standalone_lms(tmp_path: Path) -> None:
    """``lms serve`` and ``lms load`` in namespaces stackprof's trace did not make;
    ``attach --ports 7000-7003`` follows their requests and responses. The load outlasts
    attach's start-up (loading BPF takes seconds on a busy machine)."""
    with Topology(1500) as topo:
        base = [sys.executable, "-m", "profiler", "lms"]
        serve = subprocess.Popen(
            [*base, "serve", "--netns", topo.server_ns, "--bind", topo.server_ip]
            + ["--serve-us", "10", "--duration", "40"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert serve.stdout is not None
            assert serve.stdout.readline().startswith("ready 7000-7003")
            load = subprocess.Popen(
                [*base, "load", "--netns", topo.client_ns, "--server", topo.server_ip]
                + ["--clients", "2", "--duration", "15"],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            time.sleep(1.0)
            netns = f"{topo.client_ns},{topo.server_ns}"
            out_args = ["--json", str(tmp_path / "a.json"), "--out", str(tmp_path / "a-run.json")]
            proc = stackprof(
                "attach", "--ports", "7000-7003", "--netns", netns, "--duration", "3",
                "--no-live", *out_args,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            out, _ = load.communicate(timeout=60)
            assert load.returncode == 0
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bad"] == 0 and report["received"] > 20
    assert all(n > 0 for n in report["per_server"]), "all four servers were asked"
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["datagrams"]["request"]["traced"] > 20
    assert doc["datagrams"]["response"]["traced"] > 20
    assert doc["datagrams"]["response"]["fragments_per_datagram"] == 6.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--transport", "packet-v3"], "needs --ifname"),
        (["load", "--netns", "sp-no-such-namespace"], "not found"),
        (["serve", "--port", "65534", "--servers", "4"], "port range"),
        (["load", "--request-size", "20"], "request size"),
    ],
)
def test_lms_command_refuses_bad_input(args: list[str], message: str) -> None:
    proc = stackprof("lms", *args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
