"""Every transport traced end to end through the CLI, then compared (`--transport all`)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import command
import pytest

from profiler.hooks import PARENT, STAGE_SPANS
from profiler.transports import rds_missing

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

CLIENTS = 4
SERVED = ("udp", "udp-mmsg", "packet-v2", "packet-v3", "tcp")


stackprof = functools.partial(command.stackprof, timeout=300)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `trace --transport all` at MTU 1500 with fragmented 8 KiB responses."""
    tmp = tmp_path_factory.mktemp("transports")
    proc = stackprof(
        "trace", "--transport", "all", "--mtu", "1500", "--duration", "2",
        "--clients", str(CLIENTS), "--no-live", "--json", str(tmp / "all.json"),
        "--out", str(tmp / "runs"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads((tmp / "all.json").read_text())
    doc["screen"] = proc.stdout
    doc["saved"] = sorted(p.name for p in (tmp / "runs").iterdir())
    doc["by"] = {run["meta"]["transport"]: run for run in doc["runs"]}
    return doc


def stage(run: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    return next(s for s in run["stages"] if s["path"] == path and s["stage"] == name)


def test_every_transport_ran_and_was_saved(compared: dict[str, Any]) -> None:
    assert [row["transport"] for row in compared["comparison"][: len(SERVED)]] == list(SERVED)
    assert len(compared["saved"]) == len(SERVED)
    for transport, run in compared["by"].items():
        client = run["meta"]["client"]
        assert client["bad"] == 0 and client["received"] > 100, transport
        assert run["meta"]["server"]["cpu_s"] > 0, transport


def test_rds_is_reported_unavailable_not_silently_dropped(compared: dict[str, Any]) -> None:
    why = rds_missing()
    rows = {row["transport"]: row for row in compared["comparison"]}
    if why:
        assert rows["rds"]["unavailable"] == why
        assert "rds not run: this kernel has no RDS" in " ".join(compared["screen"].split())


def test_comparison_table_on_screen(compared: dict[str, Any]) -> None:
    lines = compared["screen"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "transports")
    table = lines[start : start + 12]
    for transport in SERVED:
        assert any(line.split()[:1] == [transport] for line in table), transport
    rows = {row["transport"]: row for row in compared["comparison"] if "requests_per_s" in row}
    assert all(row["requests_per_s"] > 0 and row["rtt_p50_us"] > 0 for row in rows.values())


def test_ring_receivers_deliver_every_request_at_the_ring(compared: dict[str, Any]) -> None:
    """PF_PACKET servers read no socket: requests end when the server has seen its ring."""
    for transport in ("packet-v2", "packet-v3"):
        run = compared["by"][transport]
        request = run["datagrams"]["request"]
        assert request["kernel_ring_delivered"] == request["traced"]
        assert request["sent"] - request["traced"] <= CLIENTS + 0.01 * request["sent"]
        assert stage(run, "request", "ring_wait")["count"] == request["traced"]
        assert stage(run, "request", "sock_wait")["count"] == 0
        chain = ("send", "qdisc", "driver", "backlog", "ring_wait")
        parts = sum(stage(run, "request", s)["p50_us"] for s in chain)
        total = stage(run, "request", "total")["p50_us"]
        assert abs(parts - total) <= 0.25 * total
        # A push that races a drain (slot reserved, drained before it is written) is
        # counted as ring_full: rare, never silent.
        assert run["missed"]["ring_full"] <= CLIENTS


def test_block_ring_waits_for_its_block_to_retire(compared: dict[str, Any]) -> None:
    """TPACKET_V3 hands frames over a block at a time: with few clients the block
    retires on its timeout, so requests wait far longer than in a V2 ring."""
    v2 = stage(compared["by"]["packet-v2"], "request", "ring_wait")["p50_us"]
    v3 = stage(compared["by"]["packet-v3"], "request", "ring_wait")["p50_us"]
    timeout_us = compared["by"]["packet-v3"]["meta"]["transport_options"]["block_timeout_ms"]
    assert v3 > 10 * v2
    assert v3 <= 1000 * timeout_us * 1.5


def test_busy_block_ring_receiver_still_delivers_every_request(tmp_path: Path) -> None:
    """64 closed-loop clients keep a TPACKET_V3 server busy: it takes retired blocks
    without polling, so a request's wait ends at the send of its response at the latest;
    none may be lost to the pending set overflowing, none may carry another's time."""
    proc = stackprof(
        "trace", "--transport", "packet-v3", "--mtu", "1500", "--duration", "2",
        "--clients", "64", "--no-live", "--json", str(tmp_path / "v3.json"),
        "--out", str(tmp_path / "v3-run.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads((tmp_path / "v3.json").read_text())
    request = run["datagrams"]["request"]
    assert request["sent"] > 1000
    assert request["sent"] - request["traced"] <= 64 + 0.01 * request["sent"]
    assert request["kernel_ring_delivered"] == request["traced"]
    assert run["missed"]["ring_full"] <= 0.01 * request["sent"]
    assert run["missed"]["flights_lost"] <= 0.01 * request["sent"]
    # No request can have waited longer than the slowest round trip a client saw.
    assert stage(run, "request", "total")["max_us"] <= run["client_rtt"]["max_us"]


def test_recvmmsg_batches_seen_by_the_kernel_match_the_server(compared: dict[str, Any]) -> None:
    run = compared["by"]["udp-mmsg"]
    batch, server = run["recvmmsg_batch"], run["meta"]["server"]
    assert batch["calls"] == server["batches"]
    assert batch["calls"] * batch["mean"] == pytest.approx(server["datagrams"], rel=0.01)
    assert compared["by"]["udp"]["recvmmsg_batch"]["calls"] == 0


def test_ring_stages_only_for_ring_transports(compared: dict[str, Any]) -> None:
    for transport, run in compared["by"].items():
        has_ring = "ring_wait" in run["meta"]["stages"]
        assert has_ring == transport.startswith("packet-"), transport
        assert set(run["meta"]["stages"]) <= set(STAGE_SPANS)
        assert [s for s in run["meta"]["stages"] if s not in PARENT][0] == "total"


def test_rds_by_name_is_a_usage_error() -> None:
    proc = stackprof("trace", "--transport", "rds", "--duration", "1")
    if rds_missing():
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "rds" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--transport", "udp,quic"),
        ("--transport", "udp-mmsg", "--batch", "0"),
        ("--transport", "packet-v3", "--block-timeout-ms", "-1"),
    ],
)
def test_bad_transport_options_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    proc = stackprof("trace", *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("stackprof: error:")


def test_tcp_messages_are_followed_by_their_bytes(compared: dict[str, Any]) -> None:
    """A stream has no datagrams: a message's segment is delivered by the read that
    copies its last byte, and the views name the stages for a stream."""
    run = compared["by"]["tcp"]
    client = run["meta"]["client"]
    for path, sent in (("request", client["sent"]), ("response", client["received"])):
        row = run["datagrams"][path]
        assert abs(row["traced"] - sent) <= CLIENTS + 0.01 * sent, (path, row, sent)
        assert stage(run, path, "total")["count"] == row["traced"]
    assert "frag_train" not in run["meta"]["stages"]
    screen = compared["screen"].split("stackprof · tcp ·")[1]
    request = screen.split("request path")[1].split("response path")[0]
    assert "ip_tcp" in request and "stream_wait" in request and "ip_udp" not in request
