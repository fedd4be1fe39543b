"""A standalone Lock Management Server: S server processes of one transport on a port range.

What ``stackprof lms serve`` runs (in this network namespace; the command wraps it in
``ip netns exec`` for another), so that ``stackprof attach --ports 7000-7003`` can watch
a service stackprof did not start. Each server is the transport's reference server
(:mod:`servers.udp_server`, :mod:`servers.mmsg_server`, :mod:`servers.packet_server`,
:mod:`servers.tcp_server`, :mod:`servers.rds_server`) running the LMS service
(:mod:`servers.lms`) on port ``--port + i``. PF_PACKET transports need ``--ifname``, the
interface whose address ``--bind`` is (loopback has no next hop to answer through).

Prints ``ready PORT-PORT`` once every server is, then runs until ``--duration`` passes
(0: until SIGINT/SIGTERM), stops the servers and prints their summed counters as one
JSON line (:func:`servers.service.merge_server_reports`).
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import time

from profiler.transports import TRANSPORTS
from servers import lms
from servers.netns_exec import NetnsProcess, child_setup
from servers.service import Stop, merge_server_reports, stop_on_signals, wakeup_fd
from servers.workload import READY_TIMEOUT_S, SERVERS, TransportOptions, server_args

STOP_TIMEOUT_S = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default="udp")
    parser.add_argument("--bind", default="127.0.0.1", help="the servers' address")
    parser.add_argument("--ifname", help="packet-v2/v3: the interface of --bind")
    parser.add_argument("--port", type=int, default=lms.DEFAULT_PORT, help="first server's")
    parser.add_argument("--servers", type=int, default=lms.DEFAULT_SERVERS)
    parser.add_argument("--serve-us", type=float, default=lms.DEFAULT_SERVE_US)
    parser.add_argument("--cache-blocks", type=int, default=lms.DEFAULT_CACHE_BLOCKS)
    parser.add_argument("--request-size", type=int, default=512, help="V3 blocks' sizing")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: until stopped)")
    parser.add_argument("--batch", type=int, default=64, help="udp-mmsg: recvmmsg vlen")
    parser.add_argument("--frames-per-block", type=int, default=32, help="packet-v3")
    parser.add_argument("--block-timeout-ms", type=float, default=10.0, help="packet-v3")
    parser.add_argument("--cpu", type=int, default=None, help="pin every server to this CPU")
    args = parser.parse_args(argv)
    if args.transport.startswith("packet-") and not args.ifname:
        parser.error(f"--transport {args.transport} needs --ifname (the interface of --bind)")
    if not 1 <= args.servers <= 64 or not 1 <= args.port <= 65536 - args.servers:
        parser.error("--servers must be 1..64 and the port range within 1..65535")
    if args.duration < 0 or not 0 <= args.serve_us <= 1e6:
        parser.error("--duration must be >= 0 and --serve-us 0..1e6")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    child_setup(None)
    options = TransportOptions(
        batch=args.batch,
        frames_per_block=args.frames_per_block,
        block_timeout_ms=args.block_timeout_ms,
    )
    options.check()
    lms_args = ["--workload", "lms", "--serve-us", repr(args.serve_us)]
    lms_args += ["--cache-blocks", str(args.cache_blocks)]
    servers = []
    for port in range(args.port, args.port + args.servers):
        argv_server = server_args(
            args.transport, args.ifname or "", args.bind, port, 8192, options, args.request_size
        )
        servers.append(
            NetnsProcess(None, SERVERS[args.transport], argv_server + lms_args, args.cpu)
        )
    try:
        for server in servers:
            server.start()
        for server in servers:
            if server.read_line(READY_TIMEOUT_S).strip() != "ready":
                raise RuntimeError(f"servers.{server.module}: {server.describe_exit()}")
        print(f"ready {args.port}-{args.port + args.servers - 1}", flush=True)
        wake = wakeup_fd()
        deadline = time.monotonic() + args.duration if args.duration else None
        while not Stop.requested and not any(not s.running() for s in servers):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                break
            select.select([wake], [], [], 1.0 if left is None else min(1.0, left))
        for server in servers:
            server.signal(signal.SIGTERM)
        reports = [service_report(server) for server in servers]
    finally:
        for server in servers:
            server.kill()
    print(json.dumps(merge_server_reports(reports)), flush=True)
    return 0


def service_report(server: NetnsProcess) -> dict[str, object]:
    """The last JSON line a stopped server printed."""
    for line in reversed(server.finish(STOP_TIMEOUT_S).strip().splitlines()):
        if line.startswith("{"):
            report: dict[str, object] = json.loads(line)
            return report
    raise RuntimeError(f"servers.{server.module} printed no report: {server.describe_exit()}")


if __name__ == "__main__":
    sys.exit(main())
