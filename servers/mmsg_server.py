"""The reference UDP server receiving in batches: udp_server's service over recvmmsg.

Why: a batch costs one system call (and one socket lock) for many datagrams,
which is what moves the ``recv`` stage of a profile. One non-blocking socket;
``poll()``; when readable, one ``recvmmsg(MSG_DONTWAIT)`` of up to ``--batch``
datagrams takes what is queued (waiting for a full batch would stall
closed-loop clients: recvmmsg checks its timeout only after a datagram
arrived). ``--batch-timeout-ms`` is still passed, and bounds a batch while a
flood keeps datagrams coming. A full batch is followed by another recvmmsg,
a partial one by poll. Each request is answered with ``sendto``, or, with
``--send-batch``, the batch's responses go out in one ``sendmmsg``. Buffers
and C headers are allocated once (:mod:`servers.mmsg`); responses are written
straight into the send slots.

Prints ``ready`` once bound, and one JSON line of counters on SIGTERM/SIGINT:
udp_server's, plus the batch sizes achieved (``batch_sizes``: {size: count}).
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from servers import adaptive, mmsg, service
from servers.payload import MAX_DATAGRAM
from servers.service import EchoHandler, Handler, Stop, wakeup_fd
from servers.udp_server import open_socket

DEFAULT_BATCH = 64
DEFAULT_BATCH_TIMEOUT_MS = 10.0
MAX_BATCH = 1024  # the kernel's UIO_MAXIOV caps vlen
POLL_TIMEOUT_MS = 100  # with --batch auto: the tuner's windows end even when quiet


@dataclass
class Counters(service.Counters):
    """udp_server's counters, plus the batching asked for and achieved."""

    batch: int | str
    batch_timeout_ms: float
    send_batch: bool
    send_calls: int = 0
    batches: int = 0
    batch_sizes: dict[str, int] = field(default_factory=dict)
    batch_mean: float = 0.0
    adapt: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    handler: Handler
    batch: int | str  # or "auto": the vector length follows the input (servers.adaptive)
    batch_timeout_ms: float
    send_batch: bool
    sink: bool

    @property
    def response_size(self) -> int:
        return self.handler.response_size


def write_response(request: memoryview, out: memoryview, size: int) -> bool:
    """Write the size-byte response to request into out (no allocation); False if malformed.

    Same bytes as :func:`servers.payload.build_response`.
    """
    return EchoHandler(size).write(request, out)


class BatchServer:
    """The poll + recvmmsg loop on one socket, with its two message vectors."""

    def __init__(self, sock: socket.socket, cfg: Config) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.cfg = cfg
        self.timeout_s = cfg.batch_timeout_ms / 1000
        self.tuner = adaptive.BatchTuner() if cfg.batch == "auto" else None
        capacity = adaptive.MAX_AUTO_BATCH if isinstance(cfg.batch, str) else cfg.batch
        self.vlen = self.tuner.vlen if self.tuner else capacity
        self.received = mmsg.MessageVector(capacity, MAX_DATAGRAM + 1)
        self.replies = mmsg.MessageVector(1 if cfg.sink else capacity, cfg.response_size)
        self.sizes = [0] * (capacity + 1)
        self.counters = Counters(
            mode="sink" if cfg.sink else "echo",
            batch=cfg.batch,
            batch_timeout_ms=cfg.batch_timeout_ms,
            send_batch=cfg.send_batch,
        )

    def serve(self) -> Counters:
        """Until SIGTERM/SIGINT (which also wake poll via the wakeup fd)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(wakeup_fd(), select.POLLIN)
        started = service.ready()
        window = started.wall
        while not Stop.requested:
            for fd, _ in poller.poll(POLL_TIMEOUT_MS if self.tuner else None):
                if fd == self.fd:
                    self.counters.wakeups += 1
                    self.drain()
            if self.tuner and (now := time.monotonic()) - window >= adaptive.WINDOW_S:
                self.vlen = self.tuner.propose(now - started.wall) or self.vlen
                window = now
        self.counters.stop_clocks(started)
        return self.finish()

    def drain(self) -> None:
        """recvmmsg batches until one comes back short (the queue was empty) or a stop."""
        while not Stop.requested:
            got = mmsg.recvmmsg(
                self.fd, self.received, self.vlen, mmsg.MSG_DONTWAIT, self.timeout_s
            )
            if got:
                self.sizes[got] += 1
                self.answer(got)
                if self.tuner:
                    self.tuner.observe(got)
            if got < self.vlen:
                return

    def answer(self, got: int) -> None:
        """Count the batch's datagrams and send their responses (one by one or in one call)."""
        counters, received, replies = self.counters, self.received, self.replies
        size, write = self.cfg.response_size, self.cfg.handler.write
        ready = 0
        for i in range(got):
            length = received.length(i)
            counters.datagrams += 1
            counters.bytes_received += length
            if self.cfg.sink:
                continue
            request = received.slots[i][:length]
            if received.truncated(i) or not write(request, replies.slots[ready]):
                counters.bad_requests += 1
                continue
            counters.requests += 1
            replies.prepare_send(ready, size, received.name_address(i))
            if self.cfg.send_batch:
                ready += 1
            else:
                self.send_one()
        if ready:
            self.send_all(ready)

    def send_one(self) -> None:
        self.counters.send_calls += 1
        try:
            self.counters.bytes_sent += mmsg.sendto(self.fd, self.replies, 0)
            self.counters.responses += 1
        except OSError:
            self.counters.send_errors += 1

    def send_all(self, ready: int) -> None:
        self.counters.send_calls += 1
        sent, errors = mmsg.sendmmsg_all(self.fd, self.replies, ready)
        self.counters.responses += sent
        self.counters.bytes_sent += sent * self.cfg.response_size
        self.counters.send_errors += errors

    def finish(self) -> Counters:
        """Fold the batch-size histogram into the report."""
        counters = self.counters
        counters.batch_sizes = {str(n): c for n, c in enumerate(self.sizes) if c}
        counters.batches = sum(self.sizes)
        if self.tuner:
            counters.adapt = {"changes": self.tuner.history, "last_batch": self.vlen}
        if counters.batches:
            counters.batch_mean = round(counters.datagrams / counters.batches, 3)
        return counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = service.option_parser(__doc__, "address to bind (the server's)", sink=True)
    parser.add_argument(
        "--batch",
        type=lambda text: text if text == "auto" else int(text),
        default=DEFAULT_BATCH,
        help="recvmmsg vlen, or auto (follows the input: servers.adaptive)",
    )
    parser.add_argument(
        "--batch-timeout-ms", type=float, default=DEFAULT_BATCH_TIMEOUT_MS, help="recvmmsg timeout"
    )
    parser.add_argument("--send-batch", action="store_true", help="answer with one sendmmsg")
    args = service.parse_args(parser, argv)
    if args.batch != "auto" and not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1..{MAX_BATCH}, got {args.batch}")
    if not args.batch_timeout_ms > 0:
        parser.error(f"--batch-timeout-ms must be > 0, got {args.batch_timeout_ms}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    service.start(args.cpu)
    handler = service.make_handler(args)
    cfg = Config(handler, args.batch, args.batch_timeout_ms, args.send_batch, args.sink)
    with open_socket(args.bind, args.port) as sock:
        counters = BatchServer(sock, cfg).serve()
    return service.report(counters, handler)


if __name__ == "__main__":
    sys.exit(main())
