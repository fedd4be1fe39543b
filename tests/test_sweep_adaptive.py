"""Adaptive batching (servers/adaptive.py): the tuners' rules without root; then (root)
``--frames-per-block auto`` re-creating a TPACKET_V3 ring under load without losing or
doubling a request, and ``--batch auto`` following the input."""

from __future__ import annotations

import os

import pytest

from servers import adaptive
from servers.topology import Topology
from servers.workload import TransportOptions, Workload

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")


def test_fpb_never_passes_half_the_clients() -> None:
    assert adaptive.fpb_ceiling(64) == 32 and adaptive.fpb_ceiling(16) == 8
    assert adaptive.fpb_ceiling(1) == 1


def test_fpb_tuner_climbs_while_the_rate_holds_and_steps_back() -> None:
    tuner = adaptive.FpbTuner(timeout_ms=10, current=8)
    assert tuner.propose(1.0, 9_000, 64) is None, "clients are still starting"
    assert tuner.propose(1.5, 9_000, 64) == 16
    assert tuner.propose(3.0, 9_500, 64) == 32, "the rate held: double again"
    assert tuner.propose(4.5, 4_000, 64) == 16, "32 lost throughput: back, and a ceiling"
    assert tuner.ceiling == 32
    assert tuner.propose(6.0, 9_000, 64) is None, "16 is the most the ceiling allows"
    assert tuner.propose(7.5, 9_000, 16) == 8, "fewer clients: at most half of them"
    assert [c["fpb"] for c in tuner.history] == [16, 32, 16, 8]


def test_sampler_counts_rate_and_distinct_clients() -> None:
    sampler = adaptive.ArrivalSampler(window_s=0.5)
    assert not sampler.due(10.0)
    for i in range(100):
        sampler.add(("10.0.0.1", 4000 + i % 8))
    assert sampler.due(10.5)
    assert sampler.take(10.5) == (200.0, 8)
    assert sampler.count == 0 and not sampler.sources


def test_batch_tuner_follows_the_batches() -> None:
    tuner = adaptive.BatchTuner(vlen=8)
    for _ in range(10):
        tuner.observe(8)
    assert tuner.propose(1.0) == 16
    for _ in range(10):
        tuner.observe(2)
    assert tuner.propose(2.0) == 8
    assert tuner.propose(3.0) is None, "no calls: no change"


@root
@pytest.mark.root
def test_v3_auto_retunes_without_losing_or_doubling_a_request() -> None:
    options = TransportOptions(frames_per_block="auto", block_timeout_ms=10)
    with (
        Topology(1500) as topo,
        Workload(
            topo, "packet-v3", clients=64, response_size=1024, duration=3.5, options=options
        ) as load,  # fmt: skip
    ):
        result = load.wait()
    server = result.server
    changes = server["adapt"]["changes"]
    assert changes, "64 clients move the first guess of 8 frames per block"
    assert all(1 <= c["fpb"] <= 32 for c in changes)
    assert result.bad == 0 and result.timeouts == 0, "no request lost in a ring swap"
    assert result.late == 0, "no request answered twice"
    assert server["requests"] <= result.sent and server["responses"] >= result.received
    assert server["ring_config"]["frames_per_block"] == changes[-1]["fpb"]


@root
@pytest.mark.root
def test_mmsg_auto_batch_serves_and_reports() -> None:
    with (
        Topology(1500) as topo,
        Workload(
            topo,
            "udp-mmsg",
            clients=16,
            response_size=1024,
            duration=1.5,
            options=TransportOptions(batch="auto"),
        ) as load,  # fmt: skip
    ):
        result = load.wait()
    assert result.received > 100 and result.bad == 0 and result.timeouts == 0
    assert result.server["batch"] == "auto"
    assert 1 <= result.server["adapt"]["last_batch"] <= adaptive.MAX_AUTO_BATCH
