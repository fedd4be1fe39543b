"""Request and response contents of the reference workload.

Pure functions, so the server, the load generator and the unit tests agree on
one format. A datagram starts with a 16-byte header (magic, client id,
sequence number); the rest is a pattern derived from the sequence number, so
a client can check that the response it got answers the request it sent and
was not corrupted or truncated on the way.
"""

from __future__ import annotations

import enum
import struct

MAGIC = 0x53505246  # "SPRF"
HEADER = struct.Struct("!IIQ")  # magic, client id, sequence number
HEADER_SIZE = HEADER.size
MAX_DATAGRAM = 65507  # largest UDP payload over IPv4
_PERIOD = 251  # prime, so the pattern never lines up with power-of-two sizes
_PATTERN = bytes(range(256)) * (MAX_DATAGRAM // 256 + 2)
_PATTERN_VIEW = memoryview(_PATTERN)


class Verdict(enum.Enum):
    """What a received response is, relative to the request awaited."""

    OK = "ok"
    STALE = "stale"  # a well-formed answer to an earlier request of this client
    BAD = "bad"


def check_size(name: str, size: int) -> int:
    """Return size if a datagram of it can carry the header, else ValueError."""
    if not HEADER_SIZE <= size <= MAX_DATAGRAM:
        raise ValueError(f"{name} must be {HEADER_SIZE}..{MAX_DATAGRAM} bytes, got {size}")
    return size


def body(seq: int, length: int) -> memoryview:
    """The pattern that follows the header of datagram seq (a view: no copy)."""
    start = seq % _PERIOD
    return _PATTERN_VIEW[start : start + length]


def header(client_id: int, seq: int) -> bytes:
    return HEADER.pack(MAGIC, client_id, seq)


def parse_header(data: bytes | memoryview) -> tuple[int, int] | None:
    """(client id, seq) of a datagram, or None if it is not one of ours."""
    if len(data) < HEADER_SIZE:
        return None
    magic, client_id, seq = HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    return client_id, seq


def build_request(client_id: int, seq: int, size: int) -> bytes:
    """A request of exactly size bytes."""
    return header(client_id, seq) + body(seq, size - HEADER_SIZE)


def build_response(request: bytes | memoryview, size: int) -> bytes | None:
    """The response of size bytes to a request, or None if the request is malformed."""
    parsed = parse_header(request)
    if parsed is None:
        return None
    return bytes(request[:HEADER_SIZE]) + body(parsed[1], size - HEADER_SIZE)


def verify_response(data: bytes | memoryview, client_id: int, seq: int, size: int) -> Verdict:
    """Whether data is the intact response of size bytes to request (client_id, seq)."""
    parsed = parse_header(data)
    if parsed is None or parsed[0] != client_id or len(data) != size:
        return Verdict.BAD
    got_seq = parsed[1]
    if got_seq > seq or data[HEADER_SIZE:] != body(got_seq, size - HEADER_SIZE):
        return Verdict.BAD
    return Verdict.OK if got_seq == seq else Verdict.STALE
