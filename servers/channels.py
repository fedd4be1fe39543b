"""A load-generator client's connection to the server, per transport: send one, receive one.

The closed-loop client logic (:mod:`servers.loadgen`) is the same for every
transport; only how a message goes out and how the next one is taken in
differ. UDP: one datagram is one message; RDS likewise, on a socket bound to
the client's own address (RDS sends only from a bound one). TCP:
length-prefixed messages (:mod:`servers.stream`) on one connection, with TCP_NODELAY so a request
leaves at once; a message cut by a timeout stays buffered for the next
receive. Every wait is bounded by the ``until_ns`` (CLOCK_MONOTONIC) given.

A channel stamps its own calls (``sent_ns``, ``received_ns``) so a client's round
trip runs from just before the send call to just after the receive call that
brought the response in: what the kernel sees of it (a trace's client path runs
from the send syscall's entry to the receive's return), without the client's
framing before or its verification after.
"""

from __future__ import annotations

import socket
import time
from typing import Protocol

from servers import rds_server
from servers.payload import MAX_DATAGRAM
from servers.stream import Deframer, frame
from servers.udp_server import set_buffers

CLIENT_TRANSPORTS = ("udp", "tcp", "rds")
_READ_CHUNK = 256 << 10
_RETRY_S = 0.01


class Channel(Protocol):
    sock: socket.socket
    sent_ns: int  # CLOCK_MONOTONIC just before the last send call
    received_ns: int  # just after the receive call that brought the last message's end in

    def send(self, message: bytes, until_ns: int) -> None: ...

    def receive(self, until_ns: int) -> bytes | memoryview | None:
        """The next message, None if until_ns passed first; EOFError if the peer closed."""


def _set_timeout(sock: socket.socket, until_ns: int) -> bool:
    """Time the next blocking call out at until_ns; False if that is already past."""
    remaining = until_ns - time.monotonic_ns()
    if remaining <= 0:
        return False
    sock.settimeout(remaining / 1e9)
    return True


def _recv_until(sock: socket.socket, buf: bytearray, until_ns: int) -> int | None:
    """recv_into buf what arrives before until_ns: its size (0 at EOF), None if nothing did."""
    if not _set_timeout(sock, until_ns):
        return None
    try:
        return sock.recv_into(buf)
    except TimeoutError:
        return None


class DatagramChannel:
    """A connected UDP socket (so ICMP errors come back as ConnectionRefusedError)."""

    def __init__(self, server: str, port: int) -> None:
        self.sock = self.open(server, port)
        self.sock.connect((server, port))
        self.buf = bytearray(MAX_DATAGRAM + 1)
        self.view = memoryview(self.buf)
        self.sent_ns = self.received_ns = 0

    @staticmethod
    def open(server: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_buffers(sock)
        return sock

    def send(self, message: bytes, until_ns: int) -> None:
        """One datagram (a UDP send does not wait for the peer, so until_ns is not needed)."""
        self.sent_ns = time.monotonic_ns()
        self.sock.send(message)

    def receive(self, until_ns: int) -> memoryview | None:
        size = _recv_until(self.sock, self.buf, until_ns)
        if size is None:
            return None
        self.received_ns = time.monotonic_ns()
        # Blocking again, so the next send is its syscall alone: with a timeout set,
        # Python polls before it (a µs or two of the round trip the kernel never sees).
        self.sock.settimeout(None)
        return self.view[:size]


class RdsChannel(DatagramChannel):
    """An RDS socket bound to the address that routes to the server, connected to it."""

    @staticmethod
    def open(server: str, port: int) -> socket.socket:
        sock = rds_server.open_socket(source_address(server, port), 0)
        sock.setblocking(True)
        return sock


def source_address(server: str, port: int) -> str:
    """The local address the routing table picks to reach server (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((server, port))
        address: str = probe.getsockname()[0]
    return address


class StreamChannel:
    """One TCP connection carrying length-prefixed messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deframer = Deframer()
        self.buf = bytearray(_READ_CHUNK)
        self.view = memoryview(self.buf)
        self.sent_ns = self.received_ns = 0

    def send(self, message: bytes, until_ns: int) -> None:
        """The whole framed message, or TimeoutError (the stream is then unusable)."""
        data = frame(message)
        if not _set_timeout(self.sock, until_ns):
            raise TimeoutError("deadline passed before the request was sent")
        self.sent_ns = time.monotonic_ns()
        self.sock.sendall(data)

    def receive(self, until_ns: int) -> bytes | None:
        while (message := self.deframer.next()) is None:
            size = _recv_until(self.sock, self.buf, until_ns)
            if size is None:
                return None
            if size == 0:
                raise EOFError("server closed the connection")
            self.received_ns = time.monotonic_ns()
            self.deframer.feed(self.view[:size])
        return message


def connect_stream(server: str, port: int, until_ns: int) -> tuple[StreamChannel | None, int]:
    """A TCP channel to the server, retrying refused connects until until_ns; (channel, errors)."""
    errors = 0
    while time.monotonic_ns() < until_ns:
        remaining = max(0.001, (until_ns - time.monotonic_ns()) / 1e9)
        try:
            sock = socket.create_connection((server, port), timeout=min(1.0, remaining))
        except (ConnectionRefusedError, TimeoutError):
            errors += 1
            time.sleep(_RETRY_S)
            continue
        return StreamChannel(sock), errors
    return None, errors
