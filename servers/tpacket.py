"""PF_PACKET socket with a TPACKET_V2 or TPACKET_V3 receive ring, and its pure parsers.

The ring is memory shared with the kernel (PACKET_RX_RING + mmap): the kernel
fills a frame (V2) or a block of packets (V3) and hands it over by setting
tp_status / block_status to TP_STATUS_USER; we read it and hand it back with
TP_STATUS_KERNEL, so receiving costs no system call per packet. V3 only wakes
the reader when a block is full or its retire timeout fires, which is the
batching knob (frames per block, block timeout) the datagram-stack paper tunes
in its Table 1.

A classic BPF filter (:mod:`servers.socket_filter`) keeps the ring for the
service's traffic. Header parsers are pure functions over any buffer so they can
be tested on synthetic bytes without root.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from servers.socket_filter import BpfInsn, attach_filter

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_RESERVE = 12
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
ETH_P_IP = 0x0800

TPACKET_V2 = 1
TPACKET_V3 = 2
VERSIONS = {2: TPACKET_V2, 3: TPACKET_V3}

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_BLK_TMO = 1 << 5
TP_STATUS_CSUM_VALID = 1 << 7

TPACKET_ALIGNMENT = 16
SOCKADDR_LL_SIZE = 20
PAGE_SIZE = mmap.PAGESIZE

# struct tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid, pad[4]
TPACKET2_HDR = struct.Struct("=IIIHHIIHH4x")
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net,
# hv1 {rxhash, vlan_tci, vlan_tpid, pad}, pad[8]
TPACKET3_HDR = struct.Struct("=IIIIIIHHIIHH8x")
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, blk_len, seq_num (u64), ts_first, ts_last
BLOCK_DESC = struct.Struct("=IIIIIIQIIII")
TPACKET_REQ = struct.Struct("=IIII")
TPACKET_REQ3 = struct.Struct("=IIIIIII")
_STATUS = struct.Struct("=I")


def tpacket_align(value: int) -> int:
    """TPACKET_ALIGN: round up to the ring's 16-byte alignment."""
    return (value + TPACKET_ALIGNMENT - 1) & ~(TPACKET_ALIGNMENT - 1)


TPACKET2_HDRLEN = tpacket_align(TPACKET2_HDR.size) + SOCKADDR_LL_SIZE
TPACKET3_HDRLEN = tpacket_align(TPACKET3_HDR.size) + SOCKADDR_LL_SIZE
HDRLEN = {TPACKET_V2: TPACKET2_HDRLEN, TPACKET_V3: TPACKET3_HDRLEN}


class FrameHeader(NamedTuple):
    """The fields of a tpacket2_hdr / tpacket3_hdr the reader needs."""

    status: int
    length: int
    snaplen: int
    mac: int
    net: int
    sec: int
    nsec: int
    next_offset: int


class BlockDesc(NamedTuple):
    """A TPACKET_V3 block descriptor (tpacket_block_desc with tpacket_hdr_v1)."""

    version: int
    offset_to_priv: int
    block_status: int
    num_pkts: int
    offset_to_first_pkt: int
    blk_len: int
    seq_num: int


def parse_v2_header(buf: bytes | bytearray | memoryview | mmap.mmap, offset: int) -> FrameHeader:
    """The tpacket2_hdr at offset (next_offset is 0: V2 frames have fixed slots)."""
    status, length, snaplen, mac, net, sec, nsec, _, _ = TPACKET2_HDR.unpack_from(buf, offset)
    return FrameHeader(status, length, snaplen, mac, net, sec, nsec, 0)


def parse_v3_header(buf: bytes | bytearray | memoryview | mmap.mmap, offset: int) -> FrameHeader:
    """The tpacket3_hdr at offset."""
    fields = TPACKET3_HDR.unpack_from(buf, offset)
    next_offset, sec, nsec, snaplen, length, status, mac, net = fields[:8]
    return FrameHeader(status, length, snaplen, mac, net, sec, nsec, next_offset)


def parse_block_desc(buf: bytes | bytearray | memoryview | mmap.mmap, offset: int) -> BlockDesc:
    """The V3 block descriptor at the start of a block."""
    return BlockDesc(*BLOCK_DESC.unpack_from(buf, offset)[:7])


def v3_packet_offsets(
    buf: bytes | bytearray | memoryview | mmap.mmap, block_offset: int, block_size: int
) -> list[int]:
    """Absolute offsets of a V3 block's packet headers, walked by tp_next_offset."""
    desc = parse_block_desc(buf, block_offset)
    offsets = []
    offset = block_offset + desc.offset_to_first_pkt
    end = block_offset + block_size
    for index in range(desc.num_pkts):
        if offset + TPACKET3_HDR.size > end:
            raise ValueError(f"V3 packet header at {offset} beyond block end {end}")
        offsets.append(offset)
        step = parse_v3_header(buf, offset).next_offset
        if step == 0 and index < desc.num_pkts - 1:
            raise ValueError(f"V3 block claims {desc.num_pkts} packets, chain ends at {index + 1}")
        offset += step
    return offsets


def frame_data(
    buf: bytes | bytearray | memoryview | mmap.mmap, offset: int, header: FrameHeader
) -> bytes:
    """A copy of the captured bytes (from the MAC header) of the frame at offset."""
    start = offset + header.mac
    return bytes(buf[start : start + header.snaplen])


@dataclass(frozen=True)
class RingConfig:
    """Ring geometry: what PACKET_RX_RING gets."""

    version: int
    frame_size: int
    block_size: int
    block_nr: int
    block_timeout_ms: int = 10
    reserve: int = 0  # PACKET_RESERVE: headroom before each packet (V3 request sizing)
    requests_per_block: int = 0  # V3 sized for requests: exactly this many fit a block

    @property
    def frames_per_block(self) -> int:
        """Requests per block (V3 sized for requests), else fixed frame slots per block
        (V3 then packs packets tighter than this)."""
        return self.requests_per_block or self.block_size // self.frame_size

    @property
    def slots_per_block(self) -> int:
        """What the kernel counts: block_size // frame_size (frame_nr must agree)."""
        return self.block_size // self.frame_size

    @property
    def frame_nr(self) -> int:
        """Total frame slots; the kernel insists on block_nr * (block_size // frame_size)."""
        return self.block_nr * self.slots_per_block

    @property
    def size(self) -> int:
        """Bytes to mmap."""
        return self.block_size * self.block_nr

    def request(self) -> bytes:
        """The packed tpacket_req (V2) or tpacket_req3 (V3)."""
        if self.version == TPACKET_V2:
            return TPACKET_REQ.pack(self.block_size, self.block_nr, self.frame_size, self.frame_nr)
        return TPACKET_REQ3.pack(
            self.block_size,
            self.block_nr,
            self.frame_size,
            self.frame_nr,
            self.block_timeout_ms,
            0,
            0,
        )


def frame_size_for_mtu(version: int, mtu: int) -> int:
    """Smallest aligned slot holding a whole frame at the MTU (kernel's netoff + MTU)."""
    netoff = tpacket_align(HDRLEN[version] + 16)
    return tpacket_align(netoff + mtu)


def ring_config(
    version: int,
    mtu: int,
    frames_per_block: int = 32,
    block_timeout_ms: int = 10,
    ring_bytes: int = 4 << 20,
    frame_size: int | None = None,
) -> RingConfig:
    """Geometry for a ring of about ring_bytes with frames_per_block MTU-sized slots per block.

    The block is rounded up to whole pages, so the slot count may exceed the request;
    V3 packs each packet in TPACKET_ALIGN(header + length) bytes, so a block of small
    requests holds more packets than slots; the server counts what it achieved.
    """
    if version not in (TPACKET_V2, TPACKET_V3):
        raise ValueError(f"unsupported TPACKET version {version}")
    if frames_per_block < 1:
        raise ValueError("frames_per_block must be >= 1")
    slot = frame_size or frame_size_for_mtu(version, mtu)
    if slot % TPACKET_ALIGNMENT:
        raise ValueError(f"frame size {slot} not a multiple of {TPACKET_ALIGNMENT}")
    block = -(-frames_per_block * slot // PAGE_SIZE) * PAGE_SIZE
    block_nr = max(4, ring_bytes // block)
    return RingConfig(version, slot, block, block_nr, block_timeout_ms)


class RxFrame(NamedTuple):
    """One received frame, copied out of the ring."""

    data: bytes
    status: int
    length: int


@dataclass
class RingCounters:
    """What the ring delivered: frames, V3 blocks and their fill, truncations."""

    frames: int = 0
    blocks: int = 0
    blocks_timed_out: int = 0
    frames_timed_out: int = 0  # in blocks the timeout retired: they waited for it
    truncated: int = 0
    max_block_fill: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class PacketRing:
    """A PF_PACKET socket bound to one interface with an mmap'ed RX ring; sends with send()."""

    def __init__(
        self,
        ifname: str,
        config: RingConfig,
        program: list[BpfInsn] | None = None,
        qdisc_bypass: bool = False,
    ) -> None:
        self.ifname = ifname
        self.config = config
        self.counters = RingCounters()
        self.block_fill: Counter[int] = Counter()
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.kernel_freezes = 0
        self._next = 0
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._setup(program, qdisc_bypass)
            self.ring = mmap.mmap(self.sock.fileno(), config.size)
            self.sock.bind((ifname, ETH_P_IP))
        except BaseException:
            self.sock.close()
            raise
        self.mac: bytes = self.sock.getsockname()[4]
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)

    def _setup(self, program: list[BpfInsn] | None, qdisc_bypass: bool) -> None:
        """Options that must precede the ring and the bind: version, filter, ring."""
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, self.config.version)
        if self.config.reserve:
            self.sock.setsockopt(SOL_PACKET, PACKET_RESERVE, self.config.reserve)
        if program is not None:
            attach_filter(self.sock, program)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if qdisc_bypass:
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, self.config.request())

    def fileno(self) -> int:
        return self.sock.fileno()

    def wait(self, timeout_ms: int) -> bool:
        """poll() for a ready frame (V2) or retired block (V3)."""
        return bool(self._poller.poll(timeout_ms))

    def receive(self, max_frames: int = 1024) -> list[RxFrame]:
        """Copy out and release every ready frame (V2) or block (V3), up to about max_frames."""
        if self.config.version == TPACKET_V2:
            return self._receive_v2(max_frames)
        return self._receive_v3(max_frames)

    def _receive_v2(self, max_frames: int) -> list[RxFrame]:
        out: list[RxFrame] = []
        ring, size, count = self.ring, self.config.frame_size, self.config.frame_nr
        while len(out) < max_frames:
            offset = self._v2_offset(self._next, size)
            header = parse_v2_header(ring, offset)
            if not header.status & TP_STATUS_USER:
                break
            out.append(self._take(ring, offset, header))
            _STATUS.pack_into(ring, offset, TP_STATUS_KERNEL)
            self._next = (self._next + 1) % count
        return out

    def _v2_offset(self, index: int, frame_size: int) -> int:
        """Frames never straddle blocks: a block's tail beyond its last whole frame is unused."""
        per_block = self.config.frames_per_block
        block, slot = divmod(index, per_block)
        return block * self.config.block_size + slot * frame_size

    def _receive_v3(self, max_frames: int) -> list[RxFrame]:
        out: list[RxFrame] = []
        ring, block_size = self.ring, self.config.block_size
        while len(out) < max_frames:
            block_offset = self._next * block_size
            desc = parse_block_desc(ring, block_offset)
            if not desc.block_status & TP_STATUS_USER:
                break
            for offset in v3_packet_offsets(ring, block_offset, block_size):
                out.append(self._take(ring, offset, parse_v3_header(ring, offset)))
            self._count_block(desc)
            _STATUS.pack_into(ring, block_offset + 8, TP_STATUS_KERNEL)
            self._next = (self._next + 1) % self.config.block_nr
        return out

    def _take(self, ring: mmap.mmap, offset: int, header: FrameHeader) -> RxFrame:
        self.counters.frames += 1
        if header.snaplen < header.length:
            self.counters.truncated += 1
        return RxFrame(frame_data(ring, offset, header), header.status, header.length)

    def _count_block(self, desc: BlockDesc) -> None:
        self.counters.blocks += 1
        if desc.block_status & TP_STATUS_BLK_TMO:
            self.counters.blocks_timed_out += 1
            self.counters.frames_timed_out += desc.num_pkts
        self.counters.max_block_fill = max(self.counters.max_block_fill, desc.num_pkts)
        self.block_fill[desc.num_pkts] += 1

    def send(self, frame: bytes) -> int:
        """Transmit one whole Ethernet frame on the bound interface."""
        return self.sock.send(frame)

    def statistics(self) -> tuple[int, int, int]:
        """Cumulative (packets, drops, queue freezes) from PACKET_STATISTICS (which resets)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freezes = struct.unpack("=III", raw.ljust(12, b"\x00"))
        self.kernel_packets += packets
        self.kernel_drops += drops
        self.kernel_freezes += freezes
        return self.kernel_packets, self.kernel_drops, self.kernel_freezes

    def close(self) -> None:
        """Unmap the ring and close the socket."""
        with contextlib.suppress(BufferError, ValueError):
            self.ring.close()
        self.sock.close()

    def __enter__(self) -> PacketRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
