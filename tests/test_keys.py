"""Fragment keying and header parsing, without root."""

from __future__ import annotations

import struct

import pytest
from flight_keys import IP_DF, IP_MF, describe, flight_key, key_tuple, parse_ipv4_udp


def ip_packet(
    ident: int,
    frag_off: int,
    payload: bytes,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = 17,
) -> bytes:
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        ident,
        frag_off,
        64,
        proto,
        0,
        bytes(map(int, src.split("."))),
        bytes(map(int, dst.split("."))),
    )
    return header + payload


def udp(sport: int, dport: int, body: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def test_parse_unfragmented() -> None:
    hdr = parse_ipv4_udp(ip_packet(0x1234, IP_DF, udp(40000, 7000, b"x" * 10)))
    assert (hdr.ident, hdr.sport, hdr.dport, hdr.header_len) == (0x1234, 40000, 7000, 20)
    assert not hdr.fragmented and hdr.first
    assert hdr.saddr == bytes([10, 0, 0, 1])


def test_fragments_of_one_datagram_share_a_key() -> None:
    first = parse_ipv4_udp(ip_packet(77, IP_MF, udp(40000, 7000, b"a" * 1472)))
    middle = parse_ipv4_udp(ip_packet(77, IP_MF | 185, b"b" * 1480))
    last = parse_ipv4_udp(ip_packet(77, 370, b"c" * 100))
    assert first.fragmented and middle.fragmented and last.fragmented
    assert first.first and not middle.first and not last.first
    assert middle.sport is None
    keys = {key_tuple(flight_key(h)) for h in (first, middle, last)}
    assert len(keys) == 1
    assert flight_key(first).sport == 0


def test_keys_differ_by_id_address_and_ports() -> None:
    base = key_tuple(flight_key(parse_ipv4_udp(ip_packet(5, IP_DF, udp(1, 2, b"")))))
    other_id = key_tuple(flight_key(parse_ipv4_udp(ip_packet(6, IP_DF, udp(1, 2, b"")))))
    other_port = key_tuple(flight_key(parse_ipv4_udp(ip_packet(5, IP_DF, udp(3, 2, b"")))))
    other_src = key_tuple(
        flight_key(parse_ipv4_udp(ip_packet(5, IP_DF, udp(1, 2, b""), src="10.0.0.9")))
    )
    assert len({base, other_id, other_port, other_src}) == 4


def test_zero_ids_of_unfragmented_datagrams_are_told_apart_by_ports() -> None:
    a = flight_key(parse_ipv4_udp(ip_packet(0, IP_DF, udp(40000, 7000, b""))))
    b = flight_key(parse_ipv4_udp(ip_packet(0, IP_DF, udp(40001, 7000, b""))))
    assert key_tuple(a) != key_tuple(b)


def test_key_fields_are_in_network_order() -> None:
    key = flight_key(parse_ipv4_udp(ip_packet(0x0102, IP_DF, udp(0x0304, 0x0506, b""))))
    assert key.id == 0x0201 and key.sport == 0x0403 and key.dport == 0x0605
    assert describe(key) == "10.0.0.1 -> 10.0.0.2 id 258 (whole)"


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x60" + b"\x00" * 39, ip_packet(1, 0, b"x" * 8, proto=6)],
)
def test_rejects_what_is_not_udp_ipv4(packet: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ipv4_udp(packet)
