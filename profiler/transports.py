"""The transports stackprof traces, named once, and whether this kernel has RDS.

The command line, the reference workload (``servers/``) and doctor all read
these names from here: servers may import the profiler, never the reverse.
"""

from __future__ import annotations

import errno
import os
import socket

TRANSPORTS = ("udp", "udp-mmsg", "packet-v2", "packet-v3", "tcp", "rds")

AF_RDS = 21  # socket.AF_RDS exists only where Python was built with RDS headers


def rds_missing() -> str | None:
    """Why RDS cannot be used here, or None if the kernel has it, over TCP (the
    only RDS transport between two namespaces joined by veth)."""
    try:
        socket.socket(AF_RDS, socket.SOCK_SEQPACKET, 0).close()
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return (
                "this kernel has no RDS (socket(AF_RDS) fails: EAFNOSUPPORT; needs the rds module)"
            )
        return f"RDS socket failed: {exc.strerror}"
    if not os.path.isdir("/sys/module/rds_tcp"):
        return "RDS is here but not RDS-TCP, which carries it over veth (modprobe rds_tcp)"
    return None
