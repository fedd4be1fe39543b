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


def window(rate: float, clients: int, frames: int = 0, waited: int = 0) -> adaptive.RingWindow:
    return adaptive.RingWindow(rate, clients, frames, waited)


def test_fpb_tuner_goes_to_half_the_clients_and_ignores_wobble() -> None:
    tuner = adaptive.FpbTuner(timeout_ms=10, current=8)
    assert tuner.propose(0.5, window(9_000, 9, 4_500, 200)) is None, "clients still starting"
    assert tuner.propose(1.0, window(9_000, 64, 4_500, 200)) == 32
    assert tuner.propose(1.5, window(20_000, 60, 10_000, 800)) is None, "30 is within 25%"
    assert tuner.propose(2.0, window(20_000, 32, 10_000, 800)) == 16, "fewer clients"
    assert tuner.propose(2.5, window(0, 0)) is None, "a quiet window: keep the ring"
    assert [c["fpb"] for c in tuner.history] == [32, 16]


def test_fpb_tuner_halves_when_blocks_wait_for_the_timeout() -> None:
    tuner = adaptive.FpbTuner(timeout_ms=10, current=32)
    starved = window(3_000, 64, 1_500, 1_400)
    assert starved.starved and not window(20_000, 64, 10_000, 1_600).starved
    assert tuner.propose(1.0, starved) == 16
    assert tuner.too_big == 32
    assert tuner.propose(1.5, window(3_000, 64, 1_500, 500)) == 8, "16 starved as well"
    assert tuner.propose(2.0, window(15_000, 64, 7_500, 100)) is None, "16 starved: stay below"
    assert tuner.propose(2.5, window(15_000, 128, 7_500, 100)) == 64, "new input: try again"


def test_fpb_tuner_fills_blocks_within_a_timeout_at_the_rate_sampled() -> None:
    tuner = adaptive.FpbTuner(timeout_ms=10, current=16)
    assert tuner.propose(1.0, window(800, 64, 400, 50)) == 8, "8 requests per 10 ms"


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
    assert all(1 <= c["fpb"] <= adaptive.fpb_ceiling(64) for c in changes)
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
