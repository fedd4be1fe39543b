"""The reference RDS server: udp_server's LMS loop on an RDS socket.

RDS (Reliable Datagram Sockets) is the transport the seed paper's database
uses between nodes: reliable, ordered messages with datagram boundaries. Over
Ethernet it rides RDS-TCP, one kernel TCP connection per pair of nodes (port
16385), which needs the ``rds_tcp`` module. The socket is SOCK_SEQPACKET bound
to the server's address; the loop is udp_server's: poll, then recvfrom/sendto
until EAGAIN.
"""

from __future__ import annotations

import socket
import sys

from profiler.transports import AF_RDS
from servers import service, udp_server
from servers.udp_server import set_buffers


def open_socket(bind: str, port: int) -> socket.socket:
    """A non-blocking RDS socket bound to (bind, port): RDS needs a bound address to send."""
    sock = socket.socket(AF_RDS, socket.SOCK_SEQPACKET, 0)
    set_buffers(sock)
    sock.bind((bind, port))
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    args = udp_server.parse_args(argv)
    service.start(args.cpu)
    handler = service.make_handler(args)
    with open_socket(args.bind, args.port) as sock:
        counters = udp_server.serve(sock, handler, args.sink)
    return service.report(counters, handler)


if __name__ == "__main__":
    sys.exit(main())
