"""The Lock Management Server (LMS) of the seed paper, as a service the reference servers run.

The paper's LMS is a set of single-threaded server processes on a range of ports;
a client's request names a database block, is sent to the server a hash of payload
fields picks, and is answered with a consistent-read (CR) copy of the block that
server keeps cached: real CPU work per request, which makes the server the
bottleneck and gives Fig. 3 its wall. Here:

- **Request** (``--request-size`` bytes, 512 by default): the payload header of
  :mod:`servers.payload` (magic, client id, sequence number), then ``LMS_REQUEST``:
  file number (u32), block number (u64) and the snapshot (SCN, u64) the copy must
  be consistent with; the rest is the payload pattern.
- **Which server**: ``server_index(file, block, servers) = crc32(pack("!IQ", file,
  block)) % servers``; the client sends to ``base port + server_index``. Deterministic
  (zlib's CRC-32 of the big-endian fields), so a block always goes to the same server,
  whose cache holds it.
- **Work**: the server keeps a cache of 8 KiB blocks (made on first request: an
  identity stamp, then a pattern). A CR copy is a copy of the cached block and
  ``rounds`` undo applications, each a BLAKE2b digest of a 1 KiB window (keyed by the
  SCN) written into the block's undo slots. ``--serve-us`` asks for a cost per
  request; the server calibrates rounds at start (:func:`calibrate`) and reports what
  it asked, the calibration and the mean it measured while serving.
- **Response**: the request's payload header echoed, ``LMS_RESPONSE`` (file, block,
  SCN, CRC-32 of the copy), then the 8192-byte copy. The client checks the echo, the
  fields, the copy's CRC and the block's identity stamp (:func:`verify_response`).
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from servers.payload import (
    HEADER_SIZE,
    Verdict,
    body,
    check_size,
    header,
    parse_header,
)

BLOCK_SIZE = 8192
LMS_REQUEST = struct.Struct("!IQQ")  # file, block, snapshot SCN
LMS_RESPONSE = struct.Struct("!IQQI")  # file, block, SCN, CRC-32 of the copy
REQUEST_MIN = HEADER_SIZE + LMS_REQUEST.size
RESPONSE_SIZE = HEADER_SIZE + LMS_RESPONSE.size + BLOCK_SIZE
STAMP = struct.Struct("!4sIQ")  # the block's identity, never touched by undo
STAMP_MAGIC = b"BLK0"
UNDO_START = 64  # undo slots live past the stamp
WINDOW = 1024  # bytes hashed per undo round
DIGEST = 16
FILES = 16
DEFAULT_SERVERS = 4
DEFAULT_PORT = 7000
DEFAULT_CLIENTS = 64  # per server, the paper's ratio
DEFAULT_SERVE_US = 50.0
DEFAULT_THINK_US = 100.0
DEFAULT_BLOCKS = 4096
DEFAULT_CACHE_BLOCKS = 4096
_HASH = struct.Struct("!IQ")
_SLOTS = (BLOCK_SIZE - UNDO_START) // DIGEST


def server_index(file: int, block: int, servers: int) -> int:
    """Which of servers serves (file, block): CRC-32 of the big-endian fields, modulo."""
    return zlib.crc32(_HASH.pack(file, block)) % servers


def build_request(client_id: int, seq: int, file: int, block: int, size: int) -> bytes:
    """An LMS request of exactly size bytes for (file, block) as of SCN seq."""
    if size < REQUEST_MIN:
        raise ValueError(f"an LMS request needs at least {REQUEST_MIN} bytes, got {size}")
    fields = LMS_REQUEST.pack(file, block, seq)
    return header(client_id, seq) + fields + body(seq, size - REQUEST_MIN)


def parse_request(data: bytes | memoryview) -> tuple[int, int, int] | None:
    """(file, block, SCN) of a request, or None if it is not an LMS request."""
    if len(data) < REQUEST_MIN or parse_header(data) is None:
        return None
    file, block, scn = LMS_REQUEST.unpack_from(data, HEADER_SIZE)
    return file, block, scn


def initial_block(file: int, block: int) -> bytearray:
    """A block as first read into the cache: its identity stamp, then the pattern."""
    data = bytearray(BLOCK_SIZE)
    data[: STAMP.size] = STAMP.pack(STAMP_MAGIC, file, block)
    data[STAMP.size :] = body(block, BLOCK_SIZE - STAMP.size)
    return data


def consistent_read(cached: bytearray, scn: int, rounds: int) -> bytearray:
    """The CR copy: a copy of the block, then rounds undo applications keyed by the SCN."""
    copy = bytearray(cached)
    key = scn.to_bytes(8, "big")
    for r in range(rounds):
        start = (r * WINDOW) % BLOCK_SIZE
        digest = hashlib.blake2b(copy[start : start + WINDOW], digest_size=DIGEST, salt=key)
        slot = UNDO_START + ((scn + r) % _SLOTS) * DIGEST
        copy[slot : slot + DIGEST] = digest.digest()
    return copy


@dataclass
class Calibration:
    """How --serve-us became rounds: the copy's own cost, one round's, the result."""

    serve_us: float
    base_us: float
    round_us: float
    rounds: int

    @property
    def expected_us(self) -> float:
        return round(self.base_us + self.rounds * self.round_us, 3)


def _time_per_call(rounds: int, calls: int) -> float:
    block = initial_block(0, 0)
    start = time.thread_time_ns()
    for i in range(calls):
        consistent_read(block, i, rounds)
    return (time.thread_time_ns() - start) / calls / 1000


def calibrate(serve_us: float, calls: int = 300) -> Calibration:
    """Rounds so a CR copy costs about serve_us µs on this CPU, now (best of 3 timings)."""
    base = min(_time_per_call(0, calls) for _ in range(3))
    probe = 32
    per_round = max(1e-3, (min(_time_per_call(probe, calls // 4) for _ in range(3)) - base) / probe)
    rounds = max(0, round((serve_us - base) / per_round))
    return Calibration(serve_us, round(base, 3), round(per_round, 3), rounds)


@dataclass
class LmsHandler:
    """The LMS service behind any reference server: request in, CR copy out."""

    rounds: int
    cache_blocks: int = DEFAULT_CACHE_BLOCKS
    calibration: Calibration | None = None
    response_size: int = RESPONSE_SIZE
    cache: dict[tuple[int, int], bytearray] = field(default_factory=dict)
    served: int = 0
    misses: int = 0
    evictions: int = 0
    work_ns: int = 0

    def block(self, file: int, block: int) -> bytearray:
        """The cached block, read in (and the oldest evicted) on a miss."""
        key = (file, block)
        found = self.cache.get(key)
        if found is None:
            self.misses += 1
            if len(self.cache) >= self.cache_blocks:
                del self.cache[next(iter(self.cache))]
                self.evictions += 1
            found = self.cache[key] = initial_block(file, block)
        return found

    def respond(self, request: bytes | memoryview) -> bytes | None:
        """The response to an LMS request, or None if it is not one."""
        fields = parse_request(request)
        if fields is None:
            return None
        file, block, scn = fields
        start = time.thread_time_ns()
        copy = consistent_read(self.block(file, block), scn, self.rounds)
        crc = zlib.crc32(copy)
        self.work_ns += time.thread_time_ns() - start
        self.served += 1
        cr = LMS_RESPONSE.pack(file, block, scn, crc)
        return b"".join((bytes(request[:HEADER_SIZE]), cr, copy))

    def write(self, request: memoryview, out: memoryview) -> bool:
        """Write the response into out (a send slot); False if the request is not one."""
        response = self.respond(request)
        if response is None:
            return False
        out[: len(response)] = response
        return True

    def report(self) -> dict[str, Any]:
        """What the server tells about its service: calibration, cache, measured work."""
        cal = self.calibration
        return {
            "name": "lms",
            "serve_us": cal.serve_us if cal else None,
            "calibrated_us": cal.expected_us if cal else None,
            "copy_us": cal.base_us if cal else None,
            "round_us": cal.round_us if cal else None,
            "rounds": self.rounds,
            "served": self.served,
            "measured_us": round(self.work_ns / self.served / 1000, 3) if self.served else 0.0,
            "cache_blocks": len(self.cache),
            "cache_misses": self.misses,
            "cache_evictions": self.evictions,
        }


def make_handler(serve_us: float, cache_blocks: int = DEFAULT_CACHE_BLOCKS) -> LmsHandler:
    """A calibrated LMS handler (calibration takes ~0.1 s at start)."""
    cal = calibrate(serve_us)
    return LmsHandler(cal.rounds, cache_blocks, cal)


def verify_response(
    data: bytes | memoryview, client_id: int, seq: int, file: int, block: int
) -> Verdict:
    """Whether data is the intact CR copy of (file, block) answering request (client_id, seq)."""
    parsed = parse_header(data)
    if parsed is None or parsed[0] != client_id or len(data) != RESPONSE_SIZE:
        return Verdict.BAD
    if parsed[1] != seq:
        return Verdict.STALE if parsed[1] < seq else Verdict.BAD
    got_file, got_block, scn, crc = LMS_RESPONSE.unpack_from(data, HEADER_SIZE)
    copy = memoryview(data)[HEADER_SIZE + LMS_RESPONSE.size :]
    stamp = STAMP.unpack_from(copy)
    if (got_file, got_block, scn) != (file, block, seq) or stamp != (STAMP_MAGIC, file, block):
        return Verdict.BAD
    return Verdict.OK if zlib.crc32(copy) == crc else Verdict.BAD


def check_request_size(size: int) -> int:
    """size if an LMS request can be that long, else ValueError."""
    check_size("request_size", size)
    if size < REQUEST_MIN:
        raise ValueError(f"request_size must be >= {REQUEST_MIN} for lms, got {size}")
    return size
