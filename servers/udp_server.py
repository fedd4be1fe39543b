"""The reference UDP server: the seed paper's lock-manager-server (LMS) loop.

One non-blocking socket; ``poll()``; when readable, ``recvfrom``/``sendto``
until EAGAIN, then poll again. Each request gets one response of
``--response-size`` bytes derived from it (see :mod:`servers.payload`). With
``--sink`` it only counts what arrives (for the blast benchmark).

Prints ``ready`` once bound, and one JSON line of counters on SIGTERM/SIGINT
(``duration_s`` and ``cpu_s`` cover the time from ``ready`` to the stop).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass

from servers.netns_exec import child_setup
from servers.payload import MAX_DATAGRAM, build_response, check_size
from servers.service import Stop, cpu_seconds, stop_on_signals, wakeup_fd

SOCKET_BUFFER = 4 << 20
_SO_SNDBUFFORCE = 32  # not exported by Python's socket module
_SO_RCVBUFFORCE = 33


@dataclass
class Counters:
    """What the server saw; printed as JSON when it stops."""

    mode: str
    datagrams: int = 0
    bytes_received: int = 0
    requests: int = 0
    bad_requests: int = 0
    responses: int = 0
    bytes_sent: int = 0
    send_errors: int = 0
    wakeups: int = 0
    duration_s: float = 0.0
    cpu_s: float = 0.0


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


def drain(sock: socket.socket, buf: bytearray, response_size: int, counters: Counters) -> None:
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
        response = build_response(view[:size], response_size)
        if response is None:
            counters.bad_requests += 1
            continue
        counters.requests += 1
        try:
            counters.bytes_sent += sock.sendto(response, addr)
            counters.responses += 1
        except OSError:
            counters.send_errors += 1


def serve(sock: socket.socket, response_size: int, sink: bool) -> Counters:
    """The LMS loop, until SIGTERM/SIGINT (which also wake poll via the wakeup fd)."""
    counters = Counters(mode="sink" if sink else "echo")
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wakeup_fd(), select.POLLIN)
    buf = bytearray(MAX_DATAGRAM + 1)
    start, cpu_start = time.monotonic(), cpu_seconds()
    print("ready", flush=True)
    while not Stop.requested:
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                counters.wakeups += 1
                drain(sock, buf, response_size, counters)
    counters.duration_s = round(time.monotonic() - start, 6)
    counters.cpu_s = round(cpu_seconds() - cpu_start, 6)
    return counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="address to bind (the server's)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response-size", type=int, default=8192)
    parser.add_argument("--sink", action="store_true", help="count datagrams, answer none")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    try:
        check_size("--response-size", args.response_size)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    child_setup(args.cpu)
    with open_socket(args.bind, args.port) as sock:
        counters = serve(sock, args.response_size, args.sink)
    print(json.dumps(asdict(counters)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
