"""The PF_PACKET reference server: udp_server's request/response service on a TPACKET ring.

Requests arrive as raw frames in an RX ring (TPACKET_V2: one frame per slot,
woken per frame; TPACKET_V3: blocks retired when full or after the block
timeout), are reassembled in user space if fragmented, and are answered with
frames built here (UDP checksum, fragmentation at the interface MTU, Ethernet
header to the next hop's MAC from :mod:`servers.neighbours`) and sent on the
packet socket. Same service (echo or lms: :func:`servers.service.make_handler`), same
``ready`` line and same JSON counters at SIGTERM/SIGINT as :mod:`servers.udp_server`, plus the
ring's own counters (V3 blocks, frames per block achieved, reassembly).

The kernel's IP stack sees every request frame as well. With no socket on the
port it would answer each request with an ICMP port unreachable, which the
client's connected socket would turn into ECONNREFUSED. We bind a plain UDP
socket on the service address and port with a classic BPF filter that drops
everything: the kernel finds a socket (so no ICMP), and the datagram is freed
inside udp_queue_rcv_skb without a copy, a wake-up or a system call of ours.
No nftables rule is needed. The price, visible to a profiler: the kernel still
reassembles and checksums each request and counts it in UDP InErrors and the
socket's drop counter (a drained socket would cost a recvfrom per request; a
tiny SO_RCVBUF would count RcvbufErrors instead).
"""

from __future__ import annotations

import argparse
import fcntl
import random
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from servers import adaptive, frames, service, socket_filter, tpacket, v3_blocks
from servers.frames import FrameError
from servers.neighbours import NeighbourCache, ResolutionError
from servers.reassembly import Reassembler
from servers.service import Handler, Stop, wakeup_fd

SIOCGIFMTU = 0x8921
REASSEMBLY_TIMEOUT_S = 30.0
EXPIRE_EVERY_S = 0.1
POLL_TIMEOUT_MS = 100
DEFAULT_FRAMES_PER_BLOCK = 32
DEFAULT_BLOCK_TIMEOUT_MS = 10
_CSUM_TRUSTED = tpacket.TP_STATUS_CSUMNOTREADY | tpacket.TP_STATUS_CSUM_VALID


@dataclass
class Counters(service.Counters):
    """udp_server's counters, then what only a user-space stack has to count."""

    version: int = 3
    mtu: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    bad_frames: int = 0
    not_for_us: int = 0
    no_neighbour: int = 0
    reassembly: dict[str, int] = field(default_factory=dict)
    ring: dict[str, int] = field(default_factory=dict)
    ring_config: dict[str, int | str] = field(default_factory=dict)
    block_fill: dict[str, int] = field(default_factory=dict)
    frames_per_block: float = 0.0
    kernel_packets: int = 0
    kernel_drops: int = 0
    neighbours: dict[str, int] = field(default_factory=dict)
    adapt: dict[str, Any] = field(default_factory=dict)


def interface_mtu(ifname: str) -> int:
    """The interface's MTU via SIOCGIFMTU (right in any namespace, unlike /sys)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16si", ifname.encode(), 0)
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, request)
    mtu: int = struct.unpack("16si", reply)[1]
    return mtu


def open_guard_socket(ip: str, port: int) -> socket.socket:
    """The UDP socket that keeps the kernel from sending port unreachable (see module doc)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socket_filter.attach_filter(sock, socket_filter.DROP_ALL_FILTER)
    sock.bind((ip, port))
    return sock


def ring_geometry(cfg: tpacket.RingConfig) -> dict[str, int | str]:
    """The ring as configured, for the report (the options asked for, after page rounding);
    ``sized_for``: a V3 block holds exactly frames_per_block requests, or MTU slots."""
    return {
        "frame_size": cfg.frame_size,
        "block_size": cfg.block_size,
        "block_nr": cfg.block_nr,
        "frames_per_block": cfg.frames_per_block,
        "block_timeout_ms": cfg.block_timeout_ms,
        "reserve": cfg.reserve,
        "sized_for": "requests" if cfg.requests_per_block else "mtu",
    }


def make_ring_config(
    args: argparse.Namespace, mtu: int, fpb: int | None = None
) -> tpacket.RingConfig:
    """TPACKET_V3 blocks hold exactly --frames-per-block requests of --request-size (the
    paper's frames per block; fpb: auto's current choice), unless --frame-size asks for
    fixed slots; V2 has MTU slots."""
    version = tpacket.VERSIONS[args.version]
    fpb = fpb or (adaptive.FIRST_FPB if args.frames_per_block == "auto" else args.frames_per_block)
    if version == tpacket.TPACKET_V3 and args.frame_size is None:
        frame_len = v3_blocks.ETH_HLEN + min(28 + args.request_size, mtu)
        return v3_blocks.ring_config_for_requests(
            fpb, frame_len, args.block_timeout_ms, args.ring_mib << 20
        )
    return tpacket.ring_config(
        version,
        mtu,
        frames_per_block=fpb,
        block_timeout_ms=args.block_timeout_ms,
        ring_bytes=args.ring_mib << 20,
        frame_size=args.frame_size,
    )


@dataclass
class ServerConfig:
    """What the server answers for and how."""

    ifname: str
    ip: str
    port: int
    handler: Handler
    sink: bool
    mtu: int


class PacketServer:
    """The request/response loop over a PacketRing."""

    def __init__(self, cfg: ServerConfig, ring: tpacket.PacketRing, neigh: NeighbourCache) -> None:
        self.cfg = cfg
        self.ring = ring
        self.neigh = neigh
        self.ip = socket.inet_aton(cfg.ip)
        self.reassembler = Reassembler(REASSEMBLY_TIMEOUT_S)
        self.counters = Counters(
            mode="sink" if cfg.sink else "echo",
            version=2 if ring.config.version == tpacket.TPACKET_V2 else 3,
            mtu=cfg.mtu,
        )
        self._ident = random.randrange(1 << 16)
        self.retuner: adaptive.RingRetuner | None = None  # --frames-per-block auto

    def handle(self, frame: tpacket.RxFrame, now: float) -> None:
        """One ring frame: parse, reassemble, answer a complete request."""
        counters = self.counters
        counters.frames_received += 1
        try:
            packet = frames.parse_frame(frame.data)
        except FrameError:
            counters.bad_frames += 1
            return
        if packet.dst != self.ip or packet.protocol != frames.IPPROTO_UDP:
            counters.not_for_us += 1
            return
        segment = self.reassembler.add(packet, now)
        if segment is None:
            return
        verify = packet.is_fragment or not frame.status & _CSUM_TRUSTED
        try:
            udp = frames.parse_udp(packet.src, packet.dst, segment, verify)
        except FrameError:
            counters.bad_frames += 1
            return
        if udp.dport != self.cfg.port:
            counters.not_for_us += 1
            return
        if self.retuner and not self.retuner.note((udp.src, udp.sport), udp.payload, now):
            return  # answered from the ring this one replaced
        self.answer(udp)

    def answer(self, udp: frames.UdpDatagram) -> None:
        """Count a request and send its response, fragmented at the MTU."""
        counters = self.counters
        counters.datagrams += 1
        counters.bytes_received += len(udp.payload)
        if self.cfg.sink:
            return
        response = self.cfg.handler.respond(udp.payload)
        if response is None:
            counters.bad_requests += 1
            return
        counters.requests += 1
        client = socket.inet_ntoa(udp.src)
        try:
            mac = self.neigh.lookup(client)
        except ResolutionError:
            counters.no_neighbour += 1
            return
        self._ident = (self._ident + 1) & 0xFFFF
        out = frames.udp_frames(
            mac, self.ring.mac, self.ip, udp.src, self.cfg.port, udp.sport,
            response, self._ident, self.cfg.mtu,
        )  # fmt: skip
        try:
            for data in out:
                self.ring.send(data)
                counters.frames_sent += 1
        except OSError:
            counters.send_errors += 1
            return
        counters.responses += 1
        counters.bytes_sent += len(response)

    def serve(self) -> Counters:
        """poll the ring until SIGTERM/SIGINT (which also wake poll via the wakeup fd)."""
        poller = select.poll()
        poller.register(self.ring.fileno(), select.POLLIN | select.POLLERR)
        poller.register(wakeup_fd(), select.POLLIN)
        started = service.ready()
        last_expiry = started.wall
        while not Stop.requested:
            events = poller.poll(POLL_TIMEOUT_MS)
            now = time.monotonic()
            if any(fd == self.ring.fileno() for fd, _ in events):
                self.counters.wakeups += 1
            self.drain(now)
            old = self.ring.fileno()
            if self.retuner and self.retuner.maybe_retune(self, now):
                poller.unregister(old)
                poller.register(self.ring.fileno(), select.POLLIN | select.POLLERR)
            if now - last_expiry >= EXPIRE_EVERY_S:
                self.reassembler.expire(now)
                last_expiry = now
        self.counters.stop_clocks(started)
        return self.finish()

    def drain(self, now: float) -> None:
        """Handle every ready frame/block until the ring is empty or a stop is requested."""
        while not Stop.requested:
            batch = self.ring.receive()
            if not batch:
                return
            for frame in batch:
                self.handle(frame, now)

    def finish(self) -> Counters:
        """Fold the ring, reassembly and neighbour counters into the report."""
        counters, ring = self.counters, self.ring
        counters.reassembly = asdict(self.reassembler.stats) | {"pending": self.reassembler.pending}
        counters.ring = ring.counters.as_dict()
        counters.ring_config = ring_geometry(ring.config)
        counters.block_fill = {str(k): v for k, v in sorted(ring.block_fill.items())}
        if ring.counters.blocks:
            counters.frames_per_block = round(ring.counters.frames / ring.counters.blocks, 3)
        counters.kernel_packets, counters.kernel_drops, _ = ring.statistics()
        counters.neighbours = dict(self.neigh.counters)
        if self.retuner:
            extra = self.retuner.report(ring)
            counters.ring, counters.adapt = extra["ring"], extra["adapt"]
            counters.kernel_packets += extra["kernel_packets"]
            counters.kernel_drops += extra["kernel_drops"]
            if counters.ring.get("blocks"):
                counters.frames_per_block = round(
                    counters.ring["frames"] / counters.ring["blocks"], 3
                )
        return counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = service.option_parser(__doc__, bind_help=None, sink=True)
    parser.add_argument("--ifname", required=True, help="interface to bind the ring to")
    parser.add_argument("--ip", required=True, help="the server's address on it")
    parser.add_argument("--version", type=int, choices=(2, 3), default=3, help="TPACKET_V2/V3")
    parser.add_argument(
        "--frames-per-block",
        type=lambda text: text if text == "auto" else int(text),
        default=DEFAULT_FRAMES_PER_BLOCK,
        help="requests per V3 block, or auto (adapts to the input: servers.adaptive)",
    )
    parser.add_argument(
        "--block-timeout-ms", type=int, default=DEFAULT_BLOCK_TIMEOUT_MS, help="V3 block retire"
    )
    parser.add_argument(
        "--frame-size", type=int, default=None, help="fixed slots (V3 default: sized for requests)"
    )
    parser.add_argument(
        "--request-size", type=int, default=512, help="V3: the requests a block is sized for"
    )
    parser.add_argument("--ring-mib", type=int, default=4, help="RX ring size")
    args = service.parse_args(parser, argv)
    if args.frames_per_block == "auto" and (args.version != 3 or args.frame_size):
        parser.error("--frames-per-block auto is for --version 3 blocks sized for requests")
    fpb = adaptive.FIRST_FPB if args.frames_per_block == "auto" else args.frames_per_block
    if fpb < 1 or args.block_timeout_ms < 1 or args.ring_mib < 1:
        parser.error("--frames-per-block, --block-timeout-ms and --ring-mib must be >= 1")
    if not 16 <= args.request_size <= 65507:
        parser.error(f"--request-size must be 16..65507, got {args.request_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    service.start(args.cpu)
    mtu = interface_mtu(args.ifname)
    ring_cfg = make_ring_config(args, mtu)
    program = socket_filter.udp_service_filter(args.ip, args.port)
    handler = service.make_handler(args)
    cfg = ServerConfig(args.ifname, args.ip, args.port, handler, args.sink, mtu)
    with (
        open_guard_socket(args.ip, args.port),
        NeighbourCache() as neigh,
        tpacket.PacketRing(args.ifname, ring_cfg, program) as ring,
    ):
        server = PacketServer(cfg, ring, neigh)
        if args.frames_per_block == "auto":
            server.retuner = adaptive.RingRetuner(
                make_config=lambda fpb: make_ring_config(args, mtu, fpb),
                open_ring=lambda config: tpacket.PacketRing(args.ifname, config, program),
                timeout_ms=args.block_timeout_ms,
            )
        counters = server.serve()
    return service.report(counters, handler)


if __name__ == "__main__":
    sys.exit(main())
