"""IPv4 reassembly in user space, for the PF_PACKET server: fragmented requests made
whole again, with a timeout like the kernel's ipfrag_time. One small class; no root,
no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servers.frames import IPV4_HLEN, Ipv4Packet

FragmentKey = tuple[bytes, bytes, int, int]


@dataclass
class _Pending:
    """Fragments of one datagram collected so far."""

    created: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None
    received: int = 0


@dataclass
class ReassemblyStats:
    """What the reassembler did, for the server's counters."""

    completed: int = 0
    expired: int = 0
    duplicates: int = 0
    overlaps: int = 0
    malformed: int = 0
    evicted: int = 0
    fragments: int = 0


class Reassembler:
    """IPv4 reassembly keyed by (saddr, daddr, protocol, ID), like the kernel's ip_defrag.

    Exact duplicates are ignored and overlaps discard the whole datagram (RFC 5722
    as Linux applies it to IPv4); a datagram incomplete `timeout` seconds after its
    first fragment arrived is dropped and counted as expired.
    """

    def __init__(self, timeout: float = 30.0, max_pending: int = 4096) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.stats = ReassemblyStats()
        self._pending: dict[FragmentKey, _Pending] = {}

    @property
    def pending(self) -> int:
        """Datagrams with some but not all fragments."""
        return len(self._pending)

    def add(self, packet: Ipv4Packet, now: float) -> bytes | None:
        """Feed one packet; return the whole IP payload once a datagram is complete."""
        if not packet.is_fragment:
            return packet.payload
        self.stats.fragments += 1
        key = (packet.src, packet.dst, packet.protocol, packet.ident)
        entry = self._pending.get(key)
        if entry is None:
            entry = self._new_entry(key, now)
        if not self._insert(entry, packet):
            self._pending.pop(key, None)
            return None
        if entry.total is None or entry.received < entry.total:
            return None
        del self._pending[key]
        self.stats.completed += 1
        return b"".join(entry.pieces[off] for off in sorted(entry.pieces))

    def expire(self, now: float) -> int:
        """Drop datagrams older than the timeout; return how many were dropped."""
        stale = [k for k, e in self._pending.items() if now - e.created >= self.timeout]
        for key in stale:
            del self._pending[key]
        self.stats.expired += len(stale)
        return len(stale)

    def _new_entry(self, key: FragmentKey, now: float) -> _Pending:
        if len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.stats.evicted += 1
        entry = _Pending(created=now)
        self._pending[key] = entry
        return entry

    def _insert(self, entry: _Pending, packet: Ipv4Packet) -> bool:
        """Place a fragment; False means the datagram must be discarded."""
        start, data = packet.offset, packet.payload
        end = start + len(data)
        if (packet.more_fragments and len(data) % 8) or end > 0xFFFF - IPV4_HLEN:
            self.stats.malformed += 1
            return False
        if entry.pieces.get(start) is not None and len(entry.pieces[start]) == len(data):
            self.stats.duplicates += 1
            return True
        if self._overlaps(entry, start, end) or not self._end_consistent(entry, packet, end):
            self.stats.overlaps += 1
            return False
        entry.pieces[start] = data
        entry.received += len(data)
        if not packet.more_fragments:
            entry.total = end
        return True

    @staticmethod
    def _overlaps(entry: _Pending, start: int, end: int) -> bool:
        return any(start < off + len(d) and off < end for off, d in entry.pieces.items())

    @staticmethod
    def _end_consistent(entry: _Pending, packet: Ipv4Packet, end: int) -> bool:
        """A last fragment must not cut data already held, nor disagree with an earlier last."""
        if not packet.more_fragments:
            held_end = max((off + len(d) for off, d in entry.pieces.items()), default=0)
            return entry.total is None and end >= held_end
        return entry.total is None or end <= entry.total
