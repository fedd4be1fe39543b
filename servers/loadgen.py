"""Closed-loop clients modelled on a lock-manager workload, one OS process each.

``--transport udp`` (default): one connected UDP socket per client, a request
is one datagram. ``--transport tcp``: one TCP connection per client,
length-prefixed messages (see :mod:`servers.channels`); ``--transport rds``: one
RDS socket per client (the kernel's RDS-TCP carries it); both pingpong only.

``--mode pingpong`` (default): each client sends a request, blocks until the
matching response arrives (or ``--timeout`` passes: counted as lost, and a new
request is sent), verifies it, and records the round trip in an HDR histogram: from
just before the send call to just after the receive call that brought the response
in (the channel's stamps), as a trace's client path measures it.
``--mode blast``: each client sends requests as fast as it can, waiting for
nothing (run the server with ``--sink``; throughput = what it counted / duration).

Children report to the parent through pipes; the parent prints one JSON line.
Every loop ends at the common deadline, ``--duration`` after the parent started; a
pingpong client waits for the response to a request sent before it (up to
``--timeout``), so that a run's end leaves no request abandoned in the server's queue
(which a trace would count undelivered, or dropped when the server closes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from servers.channels import (
    CLIENT_TRANSPORTS,
    Channel,
    DatagramChannel,
    RdsChannel,
    connect_stream,
)
from servers.netns_exec import child_setup, die_with_parent
from servers.payload import Verdict, build_request, check_size, verify_response

HIGHEST_NS = 1 << 40
SIG_FIGS = 3
_BLAST_BATCH = 64  # sends between two looks at the clock


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_NS, SIG_FIGS)


@dataclass
class ClientResult:
    """One client's counters; rtt_hdr is its histogram's encoding."""

    sent: int = 0
    received: int = 0
    bad: int = 0
    timeouts: int = 0
    late: int = 0
    errors: int = 0
    connect_retries: int = 0  # refused or timed-out TCP connects retried (not errors)
    rtt_hdr: str = ""
    per_server: list[int] = field(default_factory=list)  # requests sent to each (lms_load)


@dataclass
class Config:
    server: str
    port: int
    request_size: int
    response_size: int
    timeout_ns: int
    deadline_ns: int
    mode: str
    transport: str = "udp"


@dataclass
class _Client:
    """A pingpong client's state: its channel and counters."""

    cid: int
    cfg: Config
    channel: Channel
    result: ClientResult = field(default_factory=ClientResult)


def _await(client: _Client, seq: int, until_ns: int) -> Verdict | None:
    """The verdict on the response to seq, or None if until_ns passed first."""
    while (message := client.channel.receive(until_ns)) is not None:
        verdict = verify_response(message, client.cid, seq, client.cfg.response_size)
        if verdict is not Verdict.STALE:
            return verdict
        client.result.late += 1
    return None


def _exchange(client: _Client, seq: int, hist: HdrHistogram) -> bool:
    """One request/response; False once the deadline has passed. The round trip is
    the channel's send and receive stamps: verifying (and skipping stale messages)
    is the client's own work, not the network's."""
    cfg, result, channel = client.cfg, client.result, client.channel
    request = build_request(client.cid, seq, cfg.request_size)
    now = time.monotonic_ns()
    if now >= cfg.deadline_ns:
        return False
    until_ns = now + cfg.timeout_ns
    channel.send(request, until_ns)
    result.sent += 1
    verdict = _await(client, seq, until_ns)
    if verdict is Verdict.OK:
        result.received += 1
        rtt = channel.received_ns - channel.sent_ns
        hist.record_value(max(1, min(rtt, HIGHEST_NS)))
    elif verdict is Verdict.BAD:
        result.bad += 1
    else:
        result.timeouts += 1
    return True


def run_pingpong(cid: int, cfg: Config, channel: Channel) -> ClientResult:
    client = _Client(cid, cfg, channel)
    hist = new_histogram()
    seq = 0
    while True:
        seq += 1
        try:
            if not _exchange(client, seq, hist):
                break
        except ConnectionRefusedError:
            client.result.errors += 1  # no server (ICMP port unreachable): do not spin
            time.sleep(0.01)
        except TimeoutError:
            client.result.errors += 1  # a send stuck for the timeout: the stream is out of step
            break
        except (EOFError, ConnectionError):
            client.result.errors += 1  # the TCP connection is gone
            break
    client.result.rtt_hdr = hist.encode().decode("ascii")
    return client.result


def run_blast(cid: int, cfg: Config, channel: Channel) -> ClientResult:
    result = ClientResult(rtt_hdr=new_histogram().encode().decode("ascii"))
    request = build_request(cid, 0, cfg.request_size)
    while time.monotonic_ns() < cfg.deadline_ns:
        for _ in range(_BLAST_BATCH):
            try:
                channel.sock.send(request)
                result.sent += 1
            except OSError:
                result.errors += 1
    return result


def run_client(cid: int, cfg: Config) -> ClientResult:
    """One client's whole life, in its own process."""
    channel: Channel | None
    retries = 0
    if cfg.transport == "tcp":
        channel, retries = connect_stream(cfg.server, cfg.port, cfg.deadline_ns)
    elif cfg.transport == "rds":
        channel = RdsChannel(cfg.server, cfg.port)
    else:
        channel = DatagramChannel(cfg.server, cfg.port)
    if channel is None:
        empty = new_histogram().encode().decode("ascii")
        return ClientResult(errors=1, connect_retries=retries, rtt_hdr=empty)
    with channel.sock:
        runner = run_blast if cfg.mode == "blast" else run_pingpong
        result = runner(cid, cfg, channel)
    result.connect_retries = retries
    return result


Runner = Callable[[int, Any], ClientResult]


def _child(cid: int, cfg: Any, parent: int, write_fd: int, runner: Runner) -> None:
    """Never returns: runs the client, writes its JSON to the pipe, exits."""
    code = 1
    try:
        die_with_parent(parent)
        data = json.dumps(asdict(runner(cid, cfg))).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)


def spawn(cid: int, cfg: Any, runner: Runner = run_client) -> tuple[int, int]:
    """Fork client cid (runner(cid, cfg) in the child: run_client, or another load
    generator's); return (pid, read end of its report pipe)."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(cid, cfg, parent, write_fd, runner)
    os.close(write_fd)
    return pid, read_fd


def collect(pid: int, read_fd: int) -> ClientResult | None:
    """Read a child's report and reap it; None if it died without one."""
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data or os.waitstatus_to_exitcode(status) != 0:
        return None
    return ClientResult(**json.loads(data))


def merge(results: list[ClientResult | None], duration_s: float) -> dict[str, Any]:
    """The parent's report: summed counters and the merged RTT histogram."""
    hist = new_histogram()
    total = ClientResult()
    for result in filter(None, results):
        for name in ("sent", "received", "bad", "timeouts", "late", "errors", "connect_retries"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        hist.add(HdrHistogram.decode(result.rtt_hdr.encode("ascii")))
    report = asdict(total)
    spread = [r.per_server for r in results if r and r.per_server]
    report["per_server"] = [sum(column) for column in zip(*spread, strict=True)] if spread else []
    report.update(
        duration_s=round(duration_s, 6),
        clients=len(results),
        failed_clients=sum(r is None for r in results),
        rtt_hdr=hist.encode().decode("ascii"),
    )
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="server address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--request-size", type=int, default=512)
    parser.add_argument("--response-size", type=int, default=8192)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=1.0, help="per request, seconds")
    parser.add_argument("--mode", choices=("pingpong", "blast"), default="pingpong")
    parser.add_argument("--transport", choices=CLIENT_TRANSPORTS, default="udp")
    parser.add_argument("--cpu", type=int, default=None, help="pin all clients to this CPU")
    args = parser.parse_args(argv)
    try:
        check_size("--request-size", args.request_size)
        check_size("--response-size", args.response_size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.transport != "udp" and args.mode == "blast":
        parser.error("--mode blast needs --transport udp")
    if args.clients < 1 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--clients must be >= 1, --duration and --timeout > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    child_setup(args.cpu)
    start = time.monotonic_ns()
    cfg = Config(
        server=args.server,
        port=args.port,
        request_size=args.request_size,
        response_size=args.response_size,
        timeout_ns=int(args.timeout * 1e9),
        deadline_ns=start + int(args.duration * 1e9),
        mode=args.mode,
        transport=args.transport,
    )
    children = [spawn(cid, cfg) for cid in range(args.clients)]
    results = [collect(pid, fd) for pid, fd in children]
    report = merge(results, (time.monotonic_ns() - start) / 1e9)
    print(json.dumps({"mode": args.mode, "transport": args.transport, **report}), flush=True)
    return 0 if report["failed_clients"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
