"""How a datagram's flight is keyed, mirrored from bpf/stackprof.bpf.c (a test helper).

The tests check with it, against the kernel's own map, that both sides key a
packet the same way, and name flights in their messages.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from profiler import abi
from profiler.sampling import is_sampled, key_hash

IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF
IPPROTO_UDP = 17


@dataclass(frozen=True)
class IPv4UDP:
    """The fields of an IPv4 header (and UDP ports when present) that keying uses."""

    saddr: bytes
    daddr: bytes
    ident: int
    proto: int
    frag_off: int
    total_len: int
    header_len: int
    sport: int | None
    dport: int | None

    @property
    def fragmented(self) -> bool:
        return bool(self.frag_off & (IP_MF | IP_OFFSET))

    @property
    def first(self) -> bool:
        return not self.frag_off & IP_OFFSET


def parse_ipv4_udp(packet: bytes) -> IPv4UDP:
    """Parse an IPv4 packet starting at its IP header; ValueError if it is not UDP/IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise ValueError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    total_len, ident, frag_off, _, proto = struct.unpack_from("!HHHBB", packet, 2)
    if proto != IPPROTO_UDP or ihl < 20 or len(packet) < ihl:
        raise ValueError("not a UDP/IPv4 packet")
    sport = dport = None
    if not frag_off & IP_OFFSET and len(packet) >= ihl + 4:
        sport, dport = struct.unpack_from("!HH", packet, ihl)
    return IPv4UDP(
        packet[12:16], packet[16:20], ident, proto, frag_off, total_len, ihl, sport, dport
    )


def flight_key(hdr: IPv4UDP) -> Any:
    """The key the BPF side files this packet's datagram under (network byte order fields,
    as stored in the map: ports only for unfragmented datagrams)."""
    fragmented = hdr.fragmented
    key = abi.FlightKey()
    key.saddr = int.from_bytes(hdr.saddr, "little")
    key.daddr = int.from_bytes(hdr.daddr, "little")
    key.id = int.from_bytes(hdr.ident.to_bytes(2, "big"), "little")
    key.proto = hdr.proto
    key.fragmented = int(fragmented)
    if not fragmented:
        key.sport = int.from_bytes((hdr.sport or 0).to_bytes(2, "big"), "little")
        key.dport = int.from_bytes((hdr.dport or 0).to_bytes(2, "big"), "little")
    return key


def key_tuple(key: Any) -> tuple[int, ...]:
    """A hashable form of a key, for comparing keys read from the kernel."""
    return (key.saddr, key.daddr, key.id, key.proto, key.fragmented, key.sport, key.dport)


def describe(key: Any) -> str:
    """A person's name for a flight: addresses, IP ID, fragmented or not."""
    src = ipaddress.IPv4Address(key.saddr.to_bytes(4, "little"))
    dst = ipaddress.IPv4Address(key.daddr.to_bytes(4, "little"))
    ident = int.from_bytes(key.id.to_bytes(2, "little"), "big")
    kind = "fragmented" if key.fragmented else "whole"
    return f"{src} -> {dst} id {ident} ({kind})"


def header_sampled(hdr: IPv4UDP, every: int) -> bool:
    """Whether the kernel follows this packet's datagram at --sample every (its key's
    fields as the header carries them: profiler.sampling)."""
    fragmented = hdr.fragmented
    value = key_hash(
        int.from_bytes(hdr.saddr, "big"),
        int.from_bytes(hdr.daddr, "big"),
        hdr.ident,
        hdr.proto,
        fragmented,
        0 if fragmented else hdr.sport or 0,
        0 if fragmented else hdr.dport or 0,
    )
    return is_sampled(value, every)
