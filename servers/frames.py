"""Ethernet/IPv4/UDP frames built, fragmented and parsed in user space.

The PF_PACKET server bypasses the kernel's IP and UDP modules, so everything they
would do for a datagram has to happen here: checksums and fragmentation at the MTU
exactly as Linux does it (so the receiver's kernel cannot tell the difference);
reassembly of fragmented requests is :mod:`servers.reassembly`. Pure functions;
no root, no sockets.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import numpy as np

ETH_P_IP = 0x0800
ETH_HLEN = 14
IPV4_HLEN = 20
UDP_HLEN = 8
IPPROTO_UDP = 17
DEFAULT_TTL = 64

IP_FLAG_DF = 0x4000
IP_FLAG_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF
_NUMPY_MIN = 128

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


class FrameError(ValueError):
    """A frame that is not a well-formed Ethernet/IPv4(/UDP) frame."""


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 16-bit one's-complement sum, folded to 16 bits (0 only for all-zero input).

    Short data (headers) goes through one big-endian integer; long data (payloads)
    through numpy, summing 32-bit words (RFC 1071's deferred carries) in C.
    """
    if len(data) < _NUMPY_MIN:
        if len(data) % 2:
            data = bytes(data) + b"\x00"
        value = int.from_bytes(data, "big") + initial
        if value == 0:
            return 0
        folded = value % 0xFFFF
        return folded if folded else 0xFFFF
    pad = -len(data) % 4
    words = np.frombuffer(bytes(data) + b"\x00" * pad if pad else data, dtype=">u4")
    return _fold(int(words.sum(dtype=np.uint64)) + initial)


def _fold(value: int) -> int:
    """End-around carry until 16 bits remain."""
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum (complement of the one's-complement sum)."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def ip_to_bytes(addr: str | bytes) -> bytes:
    """Four network-order bytes of an IPv4 address given as text or bytes."""
    return addr if isinstance(addr, bytes) else socket.inet_aton(addr)


def mac_to_bytes(mac: str | bytes) -> bytes:
    """Six bytes of a MAC address given as 'aa:bb:..' text or bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        return mac
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(mac: bytes) -> str:
    """'aa:bb:cc:dd:ee:ff' text of six MAC bytes."""
    return ":".join(f"{b:02x}" for b in mac)


def ethernet_header(dst_mac: str | bytes, src_mac: str | bytes, ethertype: int = ETH_P_IP) -> bytes:
    """A 14-byte Ethernet II header."""
    return _ETH.pack(mac_to_bytes(dst_mac), mac_to_bytes(src_mac), ethertype)


class _HeaderMaker:
    """IPv4 headers of one datagram's fragments.

    The fixed fields are summed once; each fragment's checksum then only adds its
    total length and flags/offset, which keeps fragmenting 8 KiB cheap in Python.
    """

    def __init__(self, src: bytes, dst: bytes, ident: int, protocol: int, ttl: int) -> None:
        self.fields = (ident & 0xFFFF, ttl, protocol)
        self.src, self.dst = src, dst
        fixed = _IPV4.pack(0x45, 0, 0, ident & 0xFFFF, 0, ttl, protocol, 0, src, dst)
        self.base = ones_complement_sum(fixed)

    def header(self, payload_len: int, flags_offset: int) -> bytes:
        total = IPV4_HLEN + payload_len
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet too long: {total}")
        checksum = ~_fold(self.base + total + flags_offset) & 0xFFFF
        ident, ttl, protocol = self.fields
        return _IPV4.pack(
            0x45, 0, total, ident, flags_offset, ttl, protocol, checksum, self.src, self.dst
        )


def ipv4_header(
    src: str | bytes,
    dst: str | bytes,
    payload_len: int,
    ident: int,
    flags_offset: int = 0,
    protocol: int = IPPROTO_UDP,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """A 20-byte IPv4 header (no options) with its header checksum filled in."""
    maker = _HeaderMaker(ip_to_bytes(src), ip_to_bytes(dst), ident, protocol, ttl)
    return maker.header(payload_len, flags_offset)


def _pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    return ones_complement_sum(src + dst + struct.pack("!BBH", 0, protocol, length))


def udp_checksum(
    src: str | bytes, dst: str | bytes, segment: bytes | bytearray | memoryview
) -> int:
    """UDP checksum over the IPv4 pseudo-header and the segment (checksum field as given).

    A computed 0 is sent as 0xFFFF (RFC 768: 0 means "no checksum").
    """
    pseudo = _pseudo_header_sum(ip_to_bytes(src), ip_to_bytes(dst), IPPROTO_UDP, len(segment))
    checksum = internet_checksum(segment, pseudo)
    return checksum if checksum else 0xFFFF


def udp_segment(
    src: str | bytes, dst: str | bytes, sport: int, dport: int, payload: bytes
) -> bytes:
    """UDP header plus payload, checksummed with the pseudo-header of src -> dst."""
    length = UDP_HLEN + len(payload)
    if length > 0xFFFF - IPV4_HLEN:
        raise ValueError(f"UDP datagram too long: {length}")
    header = _UDP.pack(sport, dport, length, 0)
    checksum = udp_checksum(src, dst, header + payload)
    return _UDP.pack(sport, dport, length, checksum) + payload


def fragment_payload_size(mtu: int) -> int:
    """Bytes of IP payload per non-final fragment: (mtu - header) rounded down to 8, as Linux."""
    size = (mtu - IPV4_HLEN) & ~7
    if size <= 0:
        raise ValueError(f"MTU too small: {mtu}")
    return size


def fragment_layout(ip_payload_len: int, mtu: int) -> list[tuple[int, int]]:
    """(byte offset, length) of each fragment's share of an IP payload at an MTU."""
    if IPV4_HLEN + ip_payload_len <= mtu:
        return [(0, ip_payload_len)]
    step = fragment_payload_size(mtu)
    return [(off, min(step, ip_payload_len - off)) for off in range(0, ip_payload_len, step)]


def ipv4_packets(
    src: str | bytes,
    dst: str | bytes,
    ip_payload: bytes,
    ident: int,
    mtu: int,
    protocol: int = IPPROTO_UDP,
    ttl: int = DEFAULT_TTL,
) -> list[bytes]:
    """IPv4 packets carrying ip_payload, fragmented at mtu the way Linux fragments.

    A payload that fits goes out whole with DF set (Linux's default PMTU discovery);
    otherwise every fragment has DF clear, the same ID, its offset in 8-byte units,
    MF on all but the last and its own header checksum.
    """
    layout = fragment_layout(len(ip_payload), mtu)
    maker = _HeaderMaker(ip_to_bytes(src), ip_to_bytes(dst), ident, protocol, ttl)
    if len(layout) == 1:
        return [maker.header(len(ip_payload), IP_FLAG_DF) + ip_payload]
    packets = []
    last = len(layout) - 1
    for index, (offset, length) in enumerate(layout):
        flags = (offset >> 3) | (IP_FLAG_MF if index < last else 0)
        packets.append(maker.header(length, flags) + ip_payload[offset : offset + length])
    return packets


def udp_frames(
    dst_mac: str | bytes,
    src_mac: str | bytes,
    src: str | bytes,
    dst: str | bytes,
    sport: int,
    dport: int,
    payload: bytes,
    ident: int,
    mtu: int,
) -> list[bytes]:
    """Ethernet frames of one UDP datagram, fragmented at mtu if it does not fit."""
    eth = ethernet_header(dst_mac, src_mac)
    segment = udp_segment(src, dst, sport, dport, payload)
    return [eth + packet for packet in ipv4_packets(src, dst, segment, ident, mtu)]


@dataclass(frozen=True)
class Ipv4Packet:
    """The fields of a parsed IPv4 packet that reassembly and replies need."""

    src_mac: bytes
    dst_mac: bytes
    src: bytes
    dst: bytes
    ident: int
    protocol: int
    ttl: int
    more_fragments: bool
    dont_fragment: bool
    offset: int
    payload: bytes

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram (first, middle or last)."""
        return self.more_fragments or self.offset != 0


@dataclass(frozen=True)
class UdpDatagram:
    """A complete (possibly reassembled) UDP datagram."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    payload: bytes


def parse_ipv4(data: bytes | memoryview, verify_checksum: bool = True) -> tuple[int, int]:
    """Validate an IPv4 header at the start of data; return (header length, total length)."""
    if len(data) < IPV4_HLEN:
        raise FrameError("truncated IPv4 header")
    version_ihl, total = data[0], struct.unpack_from("!H", data, 2)[0]
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4:
        raise FrameError(f"not IPv4 (version {version_ihl >> 4})")
    if ihl < IPV4_HLEN or total < ihl or total > len(data):
        raise FrameError(f"bad IPv4 lengths: ihl {ihl}, total {total}, have {len(data)}")
    if verify_checksum and ones_complement_sum(data[:ihl]) != 0xFFFF:
        raise FrameError("bad IPv4 header checksum")
    return ihl, total


def parse_frame(frame: bytes | memoryview, verify_checksum: bool = True) -> Ipv4Packet:
    """Parse an Ethernet II frame carrying IPv4; Ethernet padding beyond total length is cut."""
    if len(frame) < ETH_HLEN:
        raise FrameError("truncated Ethernet header")
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame, 0)
    if ethertype != ETH_P_IP:
        raise FrameError(f"not IPv4 (ethertype 0x{ethertype:04x})")
    ip = memoryview(frame)[ETH_HLEN:]
    ihl, total = parse_ipv4(ip, verify_checksum)
    fields = _IPV4.unpack_from(ip, 0)
    flags_offset = fields[4]
    return Ipv4Packet(
        src_mac=src_mac,
        dst_mac=dst_mac,
        src=fields[8],
        dst=fields[9],
        ident=fields[3],
        protocol=fields[6],
        ttl=fields[5],
        more_fragments=bool(flags_offset & IP_FLAG_MF),
        dont_fragment=bool(flags_offset & IP_FLAG_DF),
        offset=(flags_offset & IP_OFFSET_MASK) * 8,
        payload=bytes(ip[ihl:total]),
    )


def parse_udp(src: bytes, dst: bytes, segment: bytes, verify_checksum: bool = True) -> UdpDatagram:
    """Parse a whole UDP segment (header + payload) received from src to dst."""
    if len(segment) < UDP_HLEN:
        raise FrameError("truncated UDP header")
    sport, dport, length, checksum = _UDP.unpack_from(segment, 0)
    if length < UDP_HLEN or length > len(segment):
        raise FrameError(f"bad UDP length {length} (have {len(segment)})")
    segment = segment[:length]
    if verify_checksum and checksum:
        pseudo = _pseudo_header_sum(src, dst, IPPROTO_UDP, length)
        if ones_complement_sum(segment, pseudo) != 0xFFFF:
            raise FrameError("bad UDP checksum")
    return UdpDatagram(src, dst, sport, dport, segment[UDP_HLEN:])
