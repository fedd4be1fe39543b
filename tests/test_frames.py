"""Frames built, fragmented, parsed and reassembled in user space (no root)."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from servers import frames
from servers.frames import FrameError
from servers.reassembly import Reassembler

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
SRC_IP = "10.0.0.1"
DST_IP = "10.0.0.2"

# Captured from the kernel (6.18): 3000 bytes of i % 251 sent from 127.0.0.1:40000 to
# 127.0.0.1:9999 over a loopback at MTU 1500, IP ID 0x7f68, fragmented in software.
KERNEL_PAYLOAD = bytes(i % 251 for i in range(3000))
KERNEL_UDP_CHECKSUM = 0xA8A3
KERNEL_IDENT = 0x7F68
KERNEL_HEADERS = [
    "450005dc7f6820004011d7a67f0000017f000001",
    "450005dc7f6820b94011d6ed7f0000017f000001",
    "450000447f6801724011fbcc7f0000017f000001",
]


def slow_checksum(data: bytes) -> int:
    """Independent RFC 1071 checksum: a word loop with end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    assert frames.ones_complement_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert frames.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_checksum_known_value() -> None:
    header = frames.ipv4_header("192.168.0.1", "192.168.0.199", 0x73 - 20, 0, 0x4000, ttl=64)
    assert header.hex() == "45000073000040004011b861c0a80001c0a800c7"


def test_checksum_matches_independent_computation() -> None:
    rng = random.Random(7)
    for length in [0, 1, 2, 3, 20, 127, 128, 129, 130, 1479, 1480, 8200, 9000]:
        for _ in range(5):
            data = rng.randbytes(length)
            assert frames.internet_checksum(data) == slow_checksum(data), length
    assert frames.internet_checksum(b"\xff\xff" * 4) == slow_checksum(b"\xff\xff" * 4)
    assert frames.internet_checksum(b"\x00" * 6) == 0xFFFF


def test_udp_checksum_matches_kernel() -> None:
    segment = frames.udp_segment("127.0.0.1", "127.0.0.1", 40000, 9999, KERNEL_PAYLOAD)
    assert struct.unpack_from("!H", segment, 6)[0] == KERNEL_UDP_CHECKSUM


def test_udp_checksum_matches_independent_computation() -> None:
    rng = random.Random(3)
    payload = rng.randbytes(1001)
    segment = frames.udp_segment(SRC_IP, DST_IP, 1234, 5678, payload)
    pseudo = socket.inet_aton(SRC_IP) + socket.inet_aton(DST_IP) + struct.pack("!BBH", 0, 17, 1009)
    zeroed = segment[:6] + b"\x00\x00" + segment[8:]
    assert struct.unpack_from("!H", segment, 6)[0] == slow_checksum(pseudo + zeroed)


def test_fragments_match_kernel_byte_for_byte() -> None:
    segment = frames.udp_segment("127.0.0.1", "127.0.0.1", 40000, 9999, KERNEL_PAYLOAD)
    packets = frames.ipv4_packets("127.0.0.1", "127.0.0.1", segment, KERNEL_IDENT, 1500)
    assert [p[:20].hex() for p in packets] == KERNEL_HEADERS
    assert b"".join(p[20:] for p in packets) == segment


@pytest.mark.parametrize(
    ("payload_len", "mtu", "sizes"),
    [
        (8192, 1500, [1480] * 5 + [800]),
        (8192, 9000, [8200]),
        (1472, 1500, [1480]),
        (1473, 1500, [1480, 1]),
        (8972, 9000, [8980]),
        (8973, 9000, [8976, 5]),
        (1024, 1500, [1032]),
    ],
)
def test_fragmentation_boundaries(payload_len: int, mtu: int, sizes: list[int]) -> None:
    payload = bytes(payload_len)
    out = frames.udp_frames(DST_MAC, SRC_MAC, SRC_IP, DST_IP, 1, 2, payload, 0x1234, mtu)
    parsed = [frames.parse_frame(f) for f in out]
    assert [len(p.payload) for p in parsed] == sizes
    assert all(len(f) - frames.ETH_HLEN <= mtu for f in out)
    assert {p.ident for p in parsed} == {0x1234}
    if len(out) == 1:
        assert parsed[0].dont_fragment and not parsed[0].is_fragment
        return
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    assert [p.offset for p in parsed] == offsets
    assert all(off % 8 == 0 for off in offsets)
    assert [p.more_fragments for p in parsed] == [True] * (len(sizes) - 1) + [False]
    assert not any(p.dont_fragment for p in parsed)


def test_parse_roundtrip() -> None:
    payload = b"hello packet"
    (frame,) = frames.udp_frames(DST_MAC, SRC_MAC, SRC_IP, DST_IP, 4000, 5000, payload, 9, 1500)
    packet = frames.parse_frame(frame + b"\x00" * 20)
    assert frames.mac_to_str(packet.src_mac) == SRC_MAC
    assert frames.mac_to_str(packet.dst_mac) == DST_MAC
    assert socket.inet_ntoa(packet.src) == SRC_IP
    udp = frames.parse_udp(packet.src, packet.dst, packet.payload)
    assert (udp.sport, udp.dport, udp.payload) == (4000, 5000, payload)


def test_parse_rejects_bad_frames() -> None:
    (frame,) = frames.udp_frames(DST_MAC, SRC_MAC, SRC_IP, DST_IP, 1, 2, b"abcd", 9, 1500)
    with pytest.raises(FrameError):
        frames.parse_frame(frame[:12])
    with pytest.raises(FrameError):
        frames.parse_frame(frame[:12] + b"\x86\xdd" + frame[14:])
    with pytest.raises(FrameError):
        frames.parse_frame(frame[:30])
    corrupt_ip = bytearray(frame)
    corrupt_ip[22] ^= 1
    with pytest.raises(FrameError):
        frames.parse_frame(bytes(corrupt_ip))
    packet = frames.parse_frame(frame)
    corrupt_udp = packet.payload[:-1] + bytes([packet.payload[-1] ^ 0x40])
    with pytest.raises(FrameError):
        frames.parse_udp(packet.src, packet.dst, corrupt_udp)
    assert frames.parse_udp(packet.src, packet.dst, corrupt_udp, verify_checksum=False)


def fragments(payload: bytes, ident: int = 77, mtu: int = 1500) -> list[frames.Ipv4Packet]:
    out = frames.udp_frames(DST_MAC, SRC_MAC, SRC_IP, DST_IP, 1, 2, payload, ident, mtu)
    return [frames.parse_frame(f) for f in out]


def feed(reasm: Reassembler, packets: list[frames.Ipv4Packet], now: float = 0.0) -> list[bytes]:
    return [r for p in packets if (r := reasm.add(p, now)) is not None]


def test_reassembly_in_order_and_out_of_order() -> None:
    payload = random.Random(1).randbytes(8192)
    parts = fragments(payload)
    assert len(parts) == 6
    for order in [parts, parts[::-1], random.Random(2).sample(parts, len(parts))]:
        reasm = Reassembler()
        (whole,) = feed(reasm, order)
        udp = frames.parse_udp(parts[0].src, parts[0].dst, whole)
        assert udp.payload == payload
        assert reasm.pending == 0 and reasm.stats.completed == 1


def test_reassembly_interleaved_datagrams() -> None:
    a, b = random.Random(4).randbytes(5000), random.Random(5).randbytes(3000)
    parts = [p for pair in zip(fragments(a, 1), fragments(b, 2), strict=False) for p in pair]
    parts += fragments(a, 1)[len(fragments(b, 2)) :]
    reasm = Reassembler()
    assert {whole[frames.UDP_HLEN :] for whole in feed(reasm, parts)} == {a, b}


def test_unfragmented_passes_through() -> None:
    reasm = Reassembler()
    (packet,) = fragments(b"small")
    assert reasm.add(packet, 0.0) == packet.payload
    assert reasm.stats.fragments == 0


def test_reassembly_duplicates_ignored() -> None:
    payload = random.Random(6).randbytes(8192)
    parts = fragments(payload)
    reasm = Reassembler()
    order = [parts[0], parts[0], parts[2], parts[1], parts[2], *parts[3:]]
    (whole,) = feed(reasm, order)
    assert whole[8:] == payload
    assert reasm.stats.duplicates == 2


def test_reassembly_overlap_discards() -> None:
    parts = fragments(bytes(8192))
    bad = frames.Ipv4Packet(**{**parts[1].__dict__, "offset": parts[1].offset - 8})
    reasm = Reassembler()
    assert feed(reasm, [parts[0], bad]) == []
    assert reasm.stats.overlaps == 1 and reasm.pending == 0


def test_reassembly_timeout_expires_incomplete() -> None:
    parts = fragments(bytes(8192))
    reasm = Reassembler(timeout=0.5)
    assert feed(reasm, parts[:3], now=10.0) == []
    assert reasm.expire(10.4) == 0
    assert reasm.expire(10.5) == 1
    assert reasm.stats.expired == 1 and reasm.pending == 0
    assert feed(reasm, parts[3:], now=10.6) == []
    assert reasm.pending == 1


def test_reassembly_evicts_oldest_when_full() -> None:
    reasm = Reassembler(max_pending=2)
    for ident in (1, 2, 3):
        feed(reasm, fragments(bytes(3000), ident)[:1])
    assert reasm.pending == 2 and reasm.stats.evicted == 1
