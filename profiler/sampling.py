"""Which datagrams a sampled run follows (``--sample N``): the kernel's choice, in Python.

The BPF side (``bpf/keyhash.bpf.h``) follows a datagram when a hash of its flight key
is 0 modulo N; this module computes the same hash, so that a person (or a capture taken
on another host) can tell which datagrams a run followed. The key's fields are taken as
numbers in wire order: addresses, IP ID and ports as the header carries them
(big-endian), the protocol, whether the datagram is fragmented, and the ports only when
it is not (fragmented datagrams are keyed without them, as IP reassembly keys them).
Pure: no kernel, no BPF.
"""

from __future__ import annotations

import sys
from typing import Any

MASK = 0xFFFFFFFF
SEED = 0x9E3779B9  # SAMPLE_SEED in bpf/keyhash.bpf.h


def mix32(h: int) -> int:
    """murmur3's 32-bit finaliser (bpf/keyhash.bpf.h's mix32)."""
    h &= MASK
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


def key_hash(
    saddr: int, daddr: int, ident: int, proto: int, fragmented: bool, sport: int, dport: int
) -> int:
    """The sample hash of a flight key given as wire-order numbers (an address's first
    byte is its most significant; ports 0 for a fragmented datagram)."""
    h = mix32(SEED ^ saddr)
    h = mix32(h ^ daddr)
    h = mix32(h ^ ((ident & 0xFFFF) << 16 | (proto & 0xFF) << 8 | int(bool(fragmented))))
    return mix32(h ^ ((sport & 0xFFFF) << 16 | (dport & 0xFFFF)))


def is_sampled(hash_value: int, every: int) -> bool:
    """Whether a datagram of this hash is followed at 1 in ``every`` (0 or 1: all are)."""
    return every <= 1 or hash_value % every == 0


def _wire(value: int, size: int) -> int:
    """A field the kernel stored in network byte order, read back on this host as a
    number: the number the wire carries."""
    return int.from_bytes(int(value).to_bytes(size, sys.byteorder), "big")


def stored_key_hash(key: Any) -> int:
    """The sample hash of a key as the flight table stores it (``abi.FlightKey``: fields in
    network byte order, read back as host numbers)."""
    return key_hash(
        _wire(key.saddr, 4),
        _wire(key.daddr, 4),
        _wire(key.id, 2),
        int(key.proto),
        bool(key.fragmented),
        _wire(key.sport, 2),
        _wire(key.dport, 2),
    )


def key_sampled(key: Any, every: int) -> bool:
    """Whether the kernel follows the datagram of a stored key at 1 in ``every``."""
    return is_sampled(stored_key_hash(key), every)
