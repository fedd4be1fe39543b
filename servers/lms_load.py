"""Closed-loop LMS clients: each request names a block and goes to the server its hash picks.

``--clients`` is per server (the paper's ~64 clients hashing to each LMS port), so
``--servers S`` makes S x clients logical clients. They are driven by a few worker
processes (``--workers``, default one per server and at least one per CPU), each an
event loop over its clients' sockets, so hundreds of clients do not need hundreds of
processes on a small machine. A client:

1. picks a file and block (uniform over ``--blocks``), sends the request of
   :func:`servers.lms.build_request` to port ``--port + server_index(file, block, S)``;
2. waits for the consistent-read copy (``--timeout``: counted lost, and it goes on),
   verifies it (:func:`servers.lms.verify_response`) and records the round trip, from
   just before its send call to just after the receive call that brought it in (as
   :mod:`servers.loadgen` does: the loop's other work and the verifying are not in it);
3. thinks for an exponential time of mean ``--think-us`` (0: none), so the servers'
   input is bursty, then goes back to 1.

``--service echo`` sends the reference payload requests instead (each client to port
``--port + client id % S``, responses of ``--response-size``), for the same event loop
against echo servers. Transports: ``udp`` (one unconnected socket per client), ``rds``
(one bound RDS socket per client), ``tcp`` (one length-prefixed connection per client
and server). Timers are exact to about a microsecond where libc has
``epoll_pwait2`` (Linux 5.11, glibc 2.35), else to a millisecond.

Prints one JSON line: loadgen's report (sent, received, bad, timeouts, late, errors,
rtt_hdr, …) plus the clients, servers, workers, requests per server, requests/s and the
RTT's p50 and p99 in µs.
"""

from __future__ import annotations

import argparse
import array
import heapq
import json
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from servers import lms, loadgen, payload
from servers.channels import CLIENT_TRANSPORTS, DatagramChannel, RdsChannel, connect_stream
from servers.loadgen import HIGHEST_NS, ClientResult, new_histogram
from servers.netns_exec import child_setup
from servers.payload import MAX_DATAGRAM, Verdict
from servers.stream import Deframer, frame
from servers.timers import Poller

_RETRY_NS = 10_000_000
_SWEEP_NS = 20_000_000  # how often requests are checked for their timeout


@dataclass
class Config:
    server: str
    port: int
    servers: int
    first_cid: int
    clients: int  # this worker's
    request_size: int
    response_size: int
    think_ns: int
    timeout_ns: int
    deadline_ns: int
    blocks: int
    transport: str
    service: str


@dataclass
class Client:
    """One logical client: its sockets, its request in flight, its randomness."""

    cid: int
    rng: random.Random
    seq: int = 0
    pending: tuple[int, int, int, int] | None = None  # server, file, block, send call ns
    socks: dict[int, socket.socket] = field(default_factory=dict)  # server index -> socket
    deframers: dict[int, Deframer] = field(default_factory=dict)  # tcp only
    per_server: list[int] = field(default_factory=list)


class Worker:
    """The event loop of one worker process over its clients."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.result = ClientResult()
        self.rtts = array.array("q")  # recorded into HDR after the run, not in its loop
        self.poller = Poller()
        self.timers: list[tuple[int, int, int]] = []  # when, tie, cid: a thinking client's send
        self.tie = 0
        self.by_fd: dict[int, tuple[Client, int]] = {}
        self.clients: dict[int, Client] = {}
        self.buf = bytearray(MAX_DATAGRAM + 1)
        self.view = memoryview(self.buf)

    def open(self) -> None:
        """Every client's sockets (TCP: a connection to each server, retried until up)."""
        cfg = self.cfg
        for cid in range(cfg.first_cid, cfg.first_cid + cfg.clients):
            client = Client(cid, random.Random(cid * 7919 + 1), per_server=[0] * cfg.servers)
            self.clients[cid] = client
            if cfg.transport == "tcp":
                for index in range(cfg.servers):
                    channel, retries = connect_stream(cfg.server, cfg.port + index, cfg.deadline_ns)
                    self.result.connect_retries += retries
                    if channel is None:
                        self.result.errors += 1
                        continue
                    channel.sock.setblocking(False)
                    self.attach(client, index, channel.sock)
                    client.deframers[index] = Deframer()
            else:
                opener = RdsChannel.open if cfg.transport == "rds" else DatagramChannel.open
                sock = opener(cfg.server, cfg.port)
                sock.setblocking(False)
                self.attach(client, -1, sock)

    def attach(self, client: Client, index: int, sock: socket.socket) -> None:
        client.socks[index] = sock
        self.by_fd[sock.fileno()] = (client, index)
        self.poller.register(sock.fileno())

    def timer(self, when: int, client: Client) -> None:
        self.tie += 1
        heapq.heappush(self.timers, (when, self.tie, client.cid))

    def think(self, client: Client, now: int) -> None:
        """Schedule the client's next request after an exponential think time."""
        if not self.cfg.think_ns:
            self.send(client, now)
            return
        self.timer(now + int(client.rng.expovariate(1.0 / self.cfg.think_ns)), client)

    def target(self, client: Client) -> tuple[int, int, int]:
        """(server index, file, block) of the client's next request."""
        cfg = self.cfg
        if cfg.service == "echo":
            return client.cid % cfg.servers, 0, 0
        block = client.rng.randrange(cfg.blocks)
        file = block % lms.FILES  # a block lives in one file: blocks distinct blocks in all
        return lms.server_index(file, block, cfg.servers), file, block

    def send(self, client: Client, now: int) -> None:
        cfg = self.cfg
        if now >= cfg.deadline_ns:
            return
        index, file, block = self.target(client)
        client.seq += 1
        if cfg.service == "echo":
            request = payload.build_request(client.cid, client.seq, cfg.request_size)
        else:
            request = lms.build_request(client.cid, client.seq, file, block, cfg.request_size)
        stream = cfg.transport == "tcp"
        data = frame(request) if stream else request
        try:
            sock = client.socks[index if stream else -1]
            sent = time.monotonic_ns()  # not now: other clients' work may have come since
            if stream:
                sock.send(data)
            else:
                sock.sendto(data, (cfg.server, cfg.port + index))
        except (OSError, KeyError):
            self.result.errors += 1
            self.timer(now + _RETRY_NS, client)
            return
        self.result.sent += 1
        client.per_server[index] += 1
        client.pending = (index, file, block, sent)

    def verdict(self, client: Client, message: bytes | memoryview) -> Verdict:
        assert client.pending is not None
        _, file, block, _ = client.pending
        if self.cfg.service == "echo":
            return payload.verify_response(message, client.cid, client.seq, self.cfg.response_size)
        return lms.verify_response(message, client.cid, client.seq, file, block)

    def deliver(self, client: Client, message: bytes | memoryview, now: int) -> None:
        """A message for client (its end read at now): its awaited response, a late
        one, or a bad one."""
        if client.pending is None:
            self.result.late += 1
            return
        verdict = self.verdict(client, message)
        if verdict is Verdict.STALE:
            self.result.late += 1
            return
        if verdict is Verdict.OK:
            self.result.received += 1
            self.rtts.append(now - client.pending[3])
        else:
            self.result.bad += 1
        client.pending = None
        self.think(client, now)

    def messages(self, client: Client, index: int) -> Iterator[tuple[bytes | memoryview, int]]:
        """What the socket holds now: datagrams, or whole messages off the stream, each
        with when the receive call that brought its end in returned."""
        sock = client.socks[index]
        while True:
            try:
                size = sock.recv_into(self.buf)
            except BlockingIOError:
                break
            except ConnectionError:
                self.result.errors += 1
                break
            received = time.monotonic_ns()
            if index < 0:
                yield self.view[:size], received
                continue
            if size == 0:
                self.result.errors += 1
                self.poller.epoll.unregister(sock.fileno())
                break
            deframer = client.deframers[index]
            deframer.feed(self.view[:size])
            while (message := deframer.next()) is not None:
                yield message, received

    def sweep(self, now: int) -> None:
        """Requests older than the timeout are lost: counted, and their clients go on."""
        oldest = now - self.cfg.timeout_ns
        for client in self.clients.values():
            if client.pending is not None and client.pending[3] <= oldest:
                self.result.timeouts += 1
                client.pending = None
                self.send(client, now)

    def run(self) -> ClientResult:
        """Every client starts at once, then the loop runs until the deadline."""
        cfg = self.cfg
        self.open()
        now = time.monotonic_ns()
        for client in self.clients.values():
            self.think(client, now)
        next_sweep = now + _SWEEP_NS
        while now < cfg.deadline_ns:
            until = min(self.timers[0][0] if self.timers else next_sweep, next_sweep)
            for fd in self.poller.wait(min(until, cfg.deadline_ns) - now):
                client, index = self.by_fd[fd]
                for message, received in self.messages(client, index):
                    self.deliver(client, message, received)
            now = time.monotonic_ns()
            while self.timers and self.timers[0][0] <= now:
                self.send(self.clients[heapq.heappop(self.timers)[2]], now)
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + _SWEEP_NS
        for client in self.clients.values():
            for sock in client.socks.values():
                sock.close()
        hist = new_histogram()
        for rtt in self.rtts:
            hist.record_value(max(1, min(rtt, HIGHEST_NS)))
        self.result.rtt_hdr = hist.encode().decode("ascii")
        return self.result


def run_worker(first_cid: int, cfg: Config) -> ClientResult:
    """One worker's life (in its own process): its clients' counters, requests per server."""
    worker = Worker(cfg)
    result = worker.run()
    clients = worker.clients.values()
    result.per_server = [sum(c.per_server[i] for c in clients) for i in range(cfg.servers)]
    return result


def split(total: int, workers: int) -> list[tuple[int, int]]:
    """(first client id, clients) of each worker: total spread as evenly as can be."""
    base, extra = divmod(total, workers)
    out, first = [], 0
    for w in range(workers):
        count = base + (w < extra)
        out.append((first, count))
        first += count
    return out


def rtt_percentiles(encoded: str) -> dict[str, float]:
    """p50 and p99 of an encoded RTT histogram, in µs (for people reading the report)."""
    hist = HdrHistogram.decode(encoded.encode("ascii"))
    return {
        f"rtt_p{p}_us": round(hist.get_value_at_percentile(p) / 1000, 1)
        if hist.get_total_count()
        else 0.0
        for p in (50, 99)
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the servers' address")
    parser.add_argument("--port", type=int, default=lms.DEFAULT_PORT, help="first server's port")
    parser.add_argument("--servers", type=int, default=lms.DEFAULT_SERVERS)
    parser.add_argument("--clients", type=int, default=lms.DEFAULT_CLIENTS, help="per server")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: auto)")
    parser.add_argument("--think-us", type=float, default=lms.DEFAULT_THINK_US)
    parser.add_argument("--blocks", type=int, default=lms.DEFAULT_BLOCKS)
    parser.add_argument("--request-size", type=int, default=512)
    parser.add_argument("--response-size", type=int, default=8192, help="echo's")
    parser.add_argument("--service", choices=("lms", "echo"), default="lms")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=1.0, help="per request, seconds")
    parser.add_argument("--transport", choices=CLIENT_TRANSPORTS, default="udp")
    parser.add_argument("--cpu", type=int, default=None, help="pin every worker to this CPU")
    args = parser.parse_args(argv)
    try:
        if args.service == "lms":
            lms.check_request_size(args.request_size)
        payload.check_size("--request-size", args.request_size)
        payload.check_size("--response-size", args.response_size)
    except ValueError as exc:
        parser.error(str(exc))
    if not (1 <= args.servers <= 64 and 1 <= args.clients <= 4096 and args.blocks >= 1):
        parser.error("--servers must be 1..64, --clients 1..4096, --blocks >= 1")
    if args.duration <= 0 or args.timeout <= 0 or args.think_us < 0 or args.workers < 0:
        parser.error("--duration and --timeout must be > 0, --think-us and --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    child_setup(args.cpu)
    total = args.clients * args.servers
    workers = min(total, args.workers or max(args.servers, os.cpu_count() or 1))
    start = time.monotonic_ns()
    children = []
    for first, count in split(total, workers):
        cfg = Config(
            args.server, args.port, args.servers, first, count, args.request_size,
            args.response_size, int(args.think_us * 1000), int(args.timeout * 1e9),
            start + int(args.duration * 1e9), args.blocks, args.transport, args.service,
        )  # fmt: skip
        children.append(loadgen.spawn(first, cfg, run_worker))
    results = [loadgen.collect(pid, fd) for pid, fd in children]
    report = loadgen.merge(results, (time.monotonic_ns() - start) / 1e9)
    report.update(
        clients=total,
        workers=workers,
        failed_workers=report.pop("failed_clients"),
        failed_clients=0 if all(results) else total,
        servers=args.servers,
        service=args.service,
        think_us=args.think_us,
        requests_per_s=round(report["received"] / report["duration_s"], 1),
        **rtt_percentiles(report["rtt_hdr"]),
    )
    mode = "lms" if args.service == "lms" else "pingpong"
    print(json.dumps({"mode": mode, "transport": args.transport, **report}), flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
