"""Ring frame parsing on synthetic V2/V3 buffers, ring geometry and the BPF filter (no root)."""

from __future__ import annotations

import struct

import pytest

from servers import frames, socket_filter, tpacket
from servers.socket_filter import BpfInsn
from servers.tpacket import TP_STATUS_BLK_TMO, TP_STATUS_USER, TPACKET_V2, TPACKET_V3

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
CLIENT, SERVER = "10.9.0.1", "10.9.0.2"


def test_struct_sizes_match_linux() -> None:
    assert tpacket.TPACKET2_HDR.size == 32
    assert tpacket.TPACKET3_HDR.size == 48
    assert tpacket.BLOCK_DESC.size == 48
    assert tpacket.TPACKET2_HDRLEN == 52
    assert tpacket.TPACKET3_HDRLEN == 68


def v2_frame(buf: bytearray, offset: int, data: bytes, status: int) -> None:
    """Write a frame the way tpacket_rcv lays out V2: header, sockaddr_ll, data at tp_mac."""
    mac = tpacket.tpacket_align(tpacket.TPACKET2_HDRLEN + 16) - 14
    header = (status, len(data), len(data), mac, mac + 14, 1700000000, 123, 0, 0)
    tpacket.TPACKET2_HDR.pack_into(buf, offset, *header)
    buf[offset + mac : offset + mac + len(data)] = data


def test_parse_v2_frame() -> None:
    buf = bytearray(4096)
    data = bytes(range(100))
    v2_frame(buf, 2048, data, TP_STATUS_USER | tpacket.TP_STATUS_CSUMNOTREADY)
    header = tpacket.parse_v2_header(buf, 2048)
    assert header.status & TP_STATUS_USER
    assert (header.length, header.snaplen, header.sec, header.nsec) == (100, 100, 1700000000, 123)
    assert header.net == header.mac + 14
    assert tpacket.frame_data(buf, 2048, header) == data
    assert tpacket.parse_v2_header(buf, 0).status == tpacket.TP_STATUS_KERNEL


def build_v3_block(packets: list[bytes], block_size: int, status: int) -> bytearray:
    """A V3 block as the kernel fills it: descriptor, then packets chained by tp_next_offset."""
    buf = bytearray(block_size)
    first = tpacket.tpacket_align(tpacket.BLOCK_DESC.size)
    offset = first
    mac = tpacket.tpacket_align(tpacket.TPACKET3_HDRLEN + 16) - 14
    for index, data in enumerate(packets):
        step = tpacket.tpacket_align(mac + len(data))
        next_offset = step if index < len(packets) - 1 else 0
        fields = (next_offset, 5, 6, len(data), len(data) + 1, TP_STATUS_USER, mac, mac + 14)
        tpacket.TPACKET3_HDR.pack_into(buf, offset, *fields, 0, 0, 0, 0)
        buf[offset + mac : offset + mac + len(data)] = data
        offset += step
    desc = (1, 0, status, len(packets), first, offset, 42, 0, 0, 0, 0)
    tpacket.BLOCK_DESC.pack_into(buf, 0, *desc)
    return buf


def test_parse_v3_block() -> None:
    packets = [bytes([i]) * (60 + 37 * i) for i in range(5)]
    buf = build_v3_block(packets, 8192, TP_STATUS_USER | TP_STATUS_BLK_TMO)
    desc = tpacket.parse_block_desc(buf, 0)
    assert desc.num_pkts == 5 and desc.seq_num == 42 and desc.version == 1
    assert desc.block_status & TP_STATUS_BLK_TMO
    offsets = tpacket.v3_packet_offsets(buf, 0, 8192)
    assert len(offsets) == 5
    got = []
    for offset in offsets:
        header = tpacket.parse_v3_header(buf, offset)
        assert header.length == header.snaplen + 1
        got.append(tpacket.frame_data(buf, offset, header))
    assert got == packets


def test_v3_block_at_offset_and_empty() -> None:
    block = build_v3_block([b"x" * 70, b"y" * 80], 4096, TP_STATUS_USER)
    ring = bytearray(4096) + block
    assert [len(tpacket.frame_data(ring, o, tpacket.parse_v3_header(ring, o)))
            for o in tpacket.v3_packet_offsets(ring, 4096, 4096)] == [70, 80]  # fmt: skip
    assert tpacket.v3_packet_offsets(bytearray(4096), 0, 4096) == []


def test_v3_walk_rejects_runaway_offsets() -> None:
    buf = build_v3_block([b"x" * 70], 4096, TP_STATUS_USER)
    struct.pack_into("=I", buf, 12, 3)
    with pytest.raises(ValueError):
        tpacket.v3_packet_offsets(buf, 0, 4096)


@pytest.mark.parametrize("version", [TPACKET_V2, TPACKET_V3])
@pytest.mark.parametrize("mtu", [1500, 9000])
def test_ring_config_is_valid_for_kernel(version: int, mtu: int) -> None:
    cfg = tpacket.ring_config(version, mtu, frames_per_block=16, block_timeout_ms=5)
    assert cfg.block_size % tpacket.PAGE_SIZE == 0
    assert cfg.frame_size % tpacket.TPACKET_ALIGNMENT == 0
    assert cfg.frame_size >= tpacket.frame_size_for_mtu(version, mtu) >= mtu + 14
    assert cfg.frames_per_block >= 16
    assert cfg.frame_nr == cfg.block_nr * cfg.frames_per_block
    fields = struct.unpack(f"={len(cfg.request()) // 4}I", cfg.request())
    assert fields[:4] == (cfg.block_size, cfg.block_nr, cfg.frame_size, cfg.frame_nr)
    if version == TPACKET_V3:
        assert fields[4] == 5


LOAD_SIZES = {
    socket_filter.BPF_LD_W_ABS: 4,
    socket_filter.BPF_LD_H_ABS: 2,
    socket_filter.BPF_LD_B_ABS: 1,
}


def run_cbpf(program: list[BpfInsn], packet: bytes) -> int:
    """Independent interpreter of the classic BPF subset the filter uses."""
    acc = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == socket_filter.BPF_RET_K:
            return k
        if code in LOAD_SIZES:
            size = LOAD_SIZES[code]
            if k + size > len(packet):
                return 0
            acc = int.from_bytes(packet[k : k + size], "big")
        elif code == socket_filter.BPF_LD_H_IND:
            if x + k + 2 > len(packet):
                return 0
            acc = int.from_bytes(packet[x + k : x + k + 2], "big")
        elif code == socket_filter.BPF_LDX_B_MSH:
            x = (packet[k] & 0x0F) * 4
        elif code == socket_filter.BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == socket_filter.BPF_JSET_K:
            pc += jt if acc & k else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_filter_accepts_service_traffic_and_fragments() -> None:
    program = socket_filter.udp_service_filter(SERVER, 7000)
    to_service = frames.udp_frames(MAC_A, MAC_B, CLIENT, SERVER, 5555, 7000, bytes(8192), 1, 1500)
    assert len(to_service) == 6
    assert all(run_cbpf(program, f) == socket_filter.BPF_ACCEPT for f in to_service)
    (small,) = frames.udp_frames(MAC_A, MAC_B, CLIENT, SERVER, 5555, 7000, b"hi", 2, 1500)
    assert run_cbpf(program, small) == socket_filter.BPF_ACCEPT


def test_filter_rejects_other_traffic() -> None:
    program = socket_filter.udp_service_filter(SERVER, 7000)
    other_port = frames.udp_frames(MAC_A, MAC_B, CLIENT, SERVER, 5555, 7001, bytes(8192), 1, 1500)
    assert run_cbpf(program, other_port[0]) == 0
    assert all(run_cbpf(program, f) for f in other_port[1:])
    (reply,) = frames.udp_frames(MAC_B, MAC_A, SERVER, CLIENT, 7000, 5555, b"r", 3, 1500)
    assert run_cbpf(program, reply) == 0
    eth = frames.ethernet_header(MAC_A, MAC_B, 0x0806)
    assert run_cbpf(program, eth + bytes(28)) == 0
    ip = frames.ipv4_header(CLIENT, SERVER, 8, 4, protocol=1)
    assert run_cbpf(program, frames.ethernet_header(MAC_A, MAC_B) + ip + bytes(8)) == 0


def test_filter_follows_ip_options() -> None:
    program = socket_filter.udp_service_filter(SERVER, 7000)
    (frame,) = frames.udp_frames(MAC_A, MAC_B, CLIENT, SERVER, 5555, 7000, b"hi", 2, 1500)
    with_options = bytearray(frame[:14] + bytes([0x46]) + frame[15:34] + bytes(4) + frame[34:])
    assert run_cbpf(program, bytes(with_options)) == socket_filter.BPF_ACCEPT
    with_options[40:42] = (7001).to_bytes(2, "big")
    assert run_cbpf(program, bytes(with_options)) == 0
