"""The reference TCP server: the stream stand-in for RDS-TCP.

Same service as :mod:`servers.udp_server` (echo or lms, :func:`servers.service.make_handler`),
over one TCP connection per client with length-prefixed messages
(:mod:`servers.stream`). One non-blocking listener and non-blocking
connections with TCP_NODELAY (a response must not wait for Nagle) in one
level-triggered ``epoll``; a readable connection is read until EAGAIN, every
whole request in it answered, and the responses written at once; what the
socket does not take waits for EPOLLOUT.

Prints ``ready`` once listening, and one JSON line of counters on
SIGTERM/SIGINT: udp_server's (``datagrams`` counts messages received,
``responses`` those queued to a connection, written unless its client left),
plus connections accepted and closed.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
from dataclasses import dataclass, field

from servers import service
from servers.service import Handler, Stop, wakeup_fd
from servers.stream import Deframer, FramingError, prefix

READ_CHUNK = 256 << 10
READS_PER_EVENT = 16  # then let the other connections have their turn
LISTEN_BACKLOG = 128


@dataclass
class Counters(service.Counters):
    """udp_server's counters, plus connections accepted and closed."""

    connections: int = 0
    closed: int = 0


@dataclass
class Connection:
    """One client's socket, its partial input and its unsent output."""

    sock: socket.socket
    deframer: Deframer = field(default_factory=Deframer)
    out: bytearray = field(default_factory=bytearray)
    writing: bool = False  # registered for EPOLLOUT


def open_listener(bind: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class StreamServer:
    """The epoll loop over the listener and every connection."""

    def __init__(self, listener: socket.socket, handler: Handler) -> None:
        self.listener = listener
        self.handler = handler
        self.epoll = select.epoll()
        self.conns: dict[int, Connection] = {}
        self.buf = bytearray(READ_CHUNK)
        self.counters = Counters(mode="echo")

    def serve(self) -> Counters:
        """Until SIGTERM/SIGINT (which also wake epoll via the wakeup fd)."""
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.epoll.register(wakeup_fd(), select.EPOLLIN)
        started = service.ready()
        while not Stop.requested:
            events = self.epoll.poll()
            self.counters.wakeups += 1
            for fd, mask in events:
                self.dispatch(fd, mask)
        self.counters.stop_clocks(started)
        for fd in list(self.conns):
            self.close(fd)
        self.epoll.close()
        return self.counters

    def dispatch(self, fd: int, mask: int) -> None:
        if fd == self.listener.fileno():
            self.accept_all()
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        if mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            self.read(fd, conn)
        if mask & select.EPOLLOUT and fd in self.conns:
            self.flush(fd, conn)

    def accept_all(self) -> None:
        while not Stop.requested:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[sock.fileno()] = Connection(sock)
            self.epoll.register(sock.fileno(), select.EPOLLIN)
            self.counters.connections += 1

    def read(self, fd: int, conn: Connection) -> None:
        """Read what is there, answer every whole request, write the responses."""
        view = memoryview(self.buf)
        for _ in range(READS_PER_EVENT):
            try:
                size = conn.sock.recv_into(self.buf)
            except BlockingIOError:
                break
            except OSError:
                self.close(fd)
                return
            if size == 0:
                self.close(fd)
                return
            self.counters.bytes_received += size
            conn.deframer.feed(view[:size])
        try:
            self.answer(conn)
        except FramingError:
            self.counters.bad_requests += 1
            self.close(fd)
            return
        self.flush(fd, conn)

    def answer(self, conn: Connection) -> None:
        """Queue a length-prefixed response for every whole request received."""
        counters = self.counters
        while (request := conn.deframer.next()) is not None:
            counters.datagrams += 1
            response = self.handler.respond(request)
            if response is None:
                counters.bad_requests += 1
                continue
            counters.requests += 1
            conn.out += prefix(len(response))
            conn.out += response
            counters.responses += 1

    def flush(self, fd: int, conn: Connection) -> None:
        """Write what the socket takes; wait for EPOLLOUT only while something is left."""
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                break
            except OSError:
                self.counters.send_errors += 1
                self.close(fd)
                return
            self.counters.bytes_sent += sent
            del conn.out[:sent]
        want = bool(conn.out)
        if want != conn.writing:
            mask = select.EPOLLIN | (select.EPOLLOUT if want else 0)
            self.epoll.modify(fd, mask)
            conn.writing = want

    def close(self, fd: int) -> None:
        conn = self.conns.pop(fd)
        self.epoll.unregister(fd)
        conn.sock.close()
        self.counters.closed += 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = service.option_parser(__doc__, "address to listen on (the server's)", sink=False)
    return service.parse_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    service.start(args.cpu)
    handler = service.make_handler(args)
    with open_listener(args.bind, args.port) as listener:
        counters = StreamServer(listener, handler).serve()
    return service.report(counters, handler)


if __name__ == "__main__":
    sys.exit(main())
