"""The reference UDP server: the seed paper's lock-manager-server (LMS) loop.

One non-blocking socket; ``poll()``; when readable, ``recvfrom``/``sendto``
until EAGAIN, then poll again. Each request gets one response of
``--response-size`` bytes derived from it (see :mod:`servers.payload`), or with
``--workload lms`` the lock manager's consistent-read copy (:mod:`servers.lms`). With
``--sink`` it only counts what arrives (for the blast benchmark).

Prints ``ready`` once bound, and one JSON line of counters on SIGTERM/SIGINT
(``duration_s`` and ``cpu_s`` cover the time from ``ready`` to the stop).
"""

from __future__ import annotations

import argparse
import select
import socket
import sys

from servers import service
from servers.payload import MAX_DATAGRAM
from servers.service import Counters, Handler, Stop, wakeup_fd

SOCKET_BUFFER = 4 << 20
_SO_SNDBUFFORCE = 32  # not exported by Python's socket module
_SO_RCVBUFFORCE = 33


def set_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> None:
    """Large buffers so many clients' bursts are not dropped; FORCE ignores rmem_max as root."""
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def open_socket(bind: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_buffers(sock)
    sock.bind((bind, port))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, buf: bytearray, handler: Handler, counters: Counters) -> None:
    """recvfrom/sendto until the socket is empty (EAGAIN) or a stop is requested."""
    view = memoryview(buf)
    sink = counters.mode == "sink"
    while not Stop.requested:
        try:
            size, addr = sock.recvfrom_into(buf)
        except BlockingIOError:
            return
        counters.datagrams += 1
        counters.bytes_received += size
        if sink:
            continue
        response = handler.respond(view[:size])
        if response is None:
            counters.bad_requests += 1
            continue
        counters.requests += 1
        try:
            counters.bytes_sent += sock.sendto(response, addr)
            counters.responses += 1
        except OSError:
            counters.send_errors += 1


def serve(sock: socket.socket, handler: Handler, sink: bool) -> Counters:
    """The LMS loop, until SIGTERM/SIGINT (which also wake poll via the wakeup fd)."""
    counters = Counters(mode="sink" if sink else "echo")
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wakeup_fd(), select.POLLIN)
    buf = bytearray(MAX_DATAGRAM + 1)
    started = service.ready()
    while not Stop.requested:
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                counters.wakeups += 1
                drain(sock, buf, handler, counters)
    counters.stop_clocks(started)
    return counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = service.option_parser(__doc__, "address to bind (the server's)", sink=True)
    return service.parse_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    service.start(args.cpu)
    handler = service.make_handler(args)
    with open_socket(args.bind, args.port) as sock:
        counters = serve(sock, handler, args.sink)
    return service.report(counters, handler)


if __name__ == "__main__":
    sys.exit(main())
