"""Tables filled on purpose: every overflow a counted miss on screen, nothing mis-paired.

``make -C bpf tiny`` builds the same programs with tiny tables
(``bpf/.output/tiny/stackprof.bpf.o``: 16 flight slots, 8 thread stamp slots, 4 pending
ring requests; see bpf/Makefile). It is loaded explicitly through
:class:`profiler.loader.Tracer` (the collector sizes the flight table from the loaded
map, not from the header's default) and driven well past full by closed-loop clients
at MTU 1500 (8 KiB responses, 6 fragments each): more datagrams in flight than slots,
more traced threads than stamp slots, more ring requests than the ring's pending list.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console

from profiler.collector import collect
from profiler.hooks import RING_TRANSPORTS, stages_for, unused_boundaries
from profiler.loader import Tracer, choose_hooks, make_config
from profiler.paths import DATAGRAM_PATHS
from profiler.run import Run
from profiler.session import finish
from profiler.views.live import render
from servers.topology import Topology
from servers.workload import Workload

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

BPF = Path(__file__).resolve().parent.parent / "bpf"
TINY = BPF / ".output" / "tiny" / "stackprof.bpf.o"
PORT = 7200
CLIENTS = 16


@pytest.fixture(scope="module")
def tiny() -> Path:
    subprocess.run(["make", "-s", "-C", str(BPF), "tiny"], check=True, timeout=300)
    return TINY


def traced(tiny: Path, transport: str) -> tuple[Run, dict[str, int]]:
    """A 3 s closed-loop run of transport under the tiny object, refreshed as the live
    screen would be; the run and what the clients counted."""
    choice = choose_hooks(path=tiny, skip=unused_boundaries(transport))
    with Topology(1500) as topo:
        config = make_config(
            PORT,
            PORT,
            netns=list(topo.netns_inodes()),
            ring=RING_TRANSPORTS.get(transport, "none"),
        )
        run = Run(meta={"transport": transport, "stages": list(stages_for(transport))})
        with (
            Tracer(config, choice, path=tiny) as tracer,
            Workload(topo, transport=transport, clients=CLIENTS, duration=3, port=PORT) as load,
        ):
            assert tracer.flights is not None and len(tracer.flights) == 16
            while load.loadgen.running():
                collect(tracer, run)
                time.sleep(0.3)
            result = load.wait()
            time.sleep(0.2)
            finish(tracer, run)
    client = {"sent": result.sent, "received": result.received, "bad": result.bad}
    return run, client


def screen(run: Run) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(run, {}, compact=True))
    return console.export_text()


def accounted(run: Run) -> None:
    """Every flight started is delivered, lost by a cause, left in the table, or lost
    track of (flights_lost); a flight is lost track of when an overflow took its slot
    (flight_full), but for a handful left unread for a second and then given away (and
    a flight_full can also be a flight not started: its slot was being written)."""
    lost_track = sent = 0
    for row in (run.datagrams[p] for p in DATAGRAM_PATHS):
        ended = row["kernel_delivered"] + row["incomplete"] + row["undelivered"]
        ended += row["in_transit"] + sum(v for k, v in row.items() if k.startswith("dropped_"))
        assert ended <= row["kernel_sent"], row
        lost_track += row["kernel_sent"] - ended
        sent += row["kernel_sent"]
    missed = run.missed
    assert missed["flights_lost"] == lost_track
    counted = missed["flight_full"] + missed["key_reused"] + missed["pair_mismatch"]
    assert abs(lost_track - counted) <= max(5, sent // 1000), missed


def test_flight_table_and_thread_slots_past_full(tiny: Path) -> None:
    """16 clients, each with a request or a 6-fragment response in flight, in 16 slots;
    17 traced threads in 8 stamp slots."""
    run, client = traced(tiny, "udp")
    missed = run.missed
    assert client["received"] > 100 and client["bad"] == 0
    assert missed["flight_full"] > 0 and missed["thread_slot"] > 0, missed
    assert missed["pair_mismatch"] == 0 and missed["out_of_range"] == 0, missed
    accounted(run)
    for path in ("request", "response"):
        row = run.datagrams[path]
        assert 0 < row["traced"] < row["kernel_sent"], row
        assert run.stage(path, "total").get_total_count() == row["traced"]
    text = screen(run)
    # The counters wrap past the screen's width: read them as one line.
    line = " ".join(text[text.index("missed events:") :].split())
    assert f"flight_full {missed['flight_full']}" in line
    assert f"thread_slot {missed['thread_slot']}" in line
    assert f"flights_lost {missed['flights_lost']}" in line


def test_ring_pending_past_full(tiny: Path) -> None:
    """A PF_PACKET ring receiver with 16 clients' requests and room for 4 pending."""
    run, client = traced(tiny, "packet-v2")
    missed = run.missed
    assert client["received"] > 100 and client["bad"] == 0
    assert missed["ring_full"] > 0 and missed["pair_mismatch"] == 0, missed
    accounted(run)
    assert f"ring_full {missed['ring_full']}" in screen(run)
