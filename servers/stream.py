"""Length-prefixed messages on a byte stream: the TCP transport's framing.

A message on the wire is a 4-byte big-endian length, then that many bytes of
payload (a request or response of :mod:`servers.payload`). TCP keeps no
message boundaries, so a reader accumulates bytes in a :class:`Deframer` and
takes whole messages out of it; a partial message stays there across reads
(and across a client's timeout).
"""

from __future__ import annotations

import struct

from servers.payload import MAX_DATAGRAM

PREFIX = struct.Struct("!I")
PREFIX_SIZE = PREFIX.size
MAX_MESSAGE = MAX_DATAGRAM  # the same sizes as UDP, so the transports compare


class FramingError(ValueError):
    """The stream announced a message longer than MAX_MESSAGE: the peer is not ours."""


def prefix(length: int) -> bytes:
    """The length prefix of a message of length bytes."""
    if not 0 <= length <= MAX_MESSAGE:
        raise FramingError(f"message of {length} bytes, limit {MAX_MESSAGE}")
    return PREFIX.pack(length)


def frame(payload: bytes | memoryview) -> bytes:
    """payload with its length prefix, ready to send."""
    return prefix(len(payload)) + bytes(payload)


class Deframer:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0  # consumed bytes not yet cut off the front

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the stream."""
        if self._start:
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    def next(self) -> bytes | None:
        """The next whole message, or None until more bytes arrive; FramingError on a bad length."""
        available = len(self._buf) - self._start
        if available < PREFIX_SIZE:
            return None
        (length,) = PREFIX.unpack_from(self._buf, self._start)
        if length > MAX_MESSAGE:
            raise FramingError(f"message of {length} bytes, limit {MAX_MESSAGE}")
        if available < PREFIX_SIZE + length:
            return None
        begin = self._start + PREFIX_SIZE
        self._start = begin + length
        with memoryview(self._buf) as view:
            return bytes(view[begin : self._start])

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole message."""
        return len(self._buf) - self._start
