"""TPACKET_V3 blocks sized for requests: the seed paper's frames per block, exactly.

A V3 ring hands frames over a block at a time: the kernel (``__packet_lookup_frame_in_block``)
puts a frame in the open block while ``offset + footprint < block end`` and retires the
block when the next frame does not fit, or when the block timeout fires. Sized for the
MTU, as :func:`servers.tpacket.ring_config` does, a block of "32 frames" holds ~80 small
requests, so with 64 clients it never fills and every block waits for its timeout. Here a
block holds exactly ``n`` request frames: the block is the smallest whole number of pages
that can, and ``PACKET_RESERVE`` pads each frame's footprint so that the (n+1)-th does not
fit. So fpb means what the paper means: a block is handed over when the (n+1)-th request
arrives, or on the timeout.
"""

from __future__ import annotations

from servers import tpacket

V3_ALIGNMENT = 8  # the kernel's TOTAL_PKT_LEN_INCL_ALIGN
BLOCK_FIRST_PACKET = 48  # BLK_PLUS_PRIV(0): the block descriptor, 8-aligned
ETH_HLEN = 14


def v3_packet_footprint(frame_len: int, reserve: int = 0) -> int:
    """Bytes a received frame of frame_len (from the Ethernet header) takes in a V3 block:
    tpacket_rcv puts the MAC header at TPACKET_ALIGN(hdrlen + 16) + reserve - 14, and the
    next packet 8-aligned after it."""
    macoff = tpacket.tpacket_align(tpacket.TPACKET3_HDRLEN + 16) + reserve - ETH_HLEN
    return -(-(macoff + frame_len) // V3_ALIGNMENT) * V3_ALIGNMENT


def v3_request_geometry(requests: int, frame_len: int) -> tuple[int, int, int]:
    """(block_size, reserve, footprint) of a V3 block that holds exactly ``requests``
    frames of frame_len: the kernel fills a block while ``offset + footprint < block
    end`` and retires it when the next frame does not fit (or on the timeout), so
    ``48 + requests * footprint < block_size <= 48 + (requests + 1) * footprint``.
    Blocks are whole pages; PACKET_RESERVE pads each frame's footprint to fit them."""
    if requests < 1:
        raise ValueError("requests per block must be >= 1")
    base = v3_packet_footprint(frame_len)
    page = tpacket.PAGE_SIZE
    block = -(-(BLOCK_FIRST_PACKET + requests * base + 1) // page) * page
    while True:
        room = block - BLOCK_FIRST_PACKET
        low = -(-room // (requests + 1))
        footprint = max(base, -(-low // V3_ALIGNMENT) * V3_ALIGNMENT)
        if requests * footprint < room:
            return block, footprint - base, footprint
        block += page


def ring_config_for_requests(
    requests: int,
    frame_len: int,
    block_timeout_ms: int = 10,
    ring_bytes: int = 4 << 20,
) -> tpacket.RingConfig:
    """A TPACKET_V3 ring whose blocks hold exactly ``requests`` frames of frame_len:
    the paper's frames per block, for a service whose requests are all that size."""
    block, reserve, footprint = v3_request_geometry(requests, frame_len)
    slot = tpacket.tpacket_align(max(footprint, tpacket.TPACKET3_HDRLEN + reserve))
    block_nr = max(4, ring_bytes // block)
    return tpacket.RingConfig(
        tpacket.TPACKET_V3, slot, block, block_nr, block_timeout_ms, reserve, requests
    )
