"""Run in the guest: the RDS reference workload at each MTU and response size, no tracing.

``python -m tests.guest.rds_matrix OUT.json`` writes one row per (mtu, response_size) with
what the clients and the server counted. It runs inside the guest kernel (which ships RDS and
RDS-TCP as modules); the host kernel has no RDS.
"""

from __future__ import annotations

import json
import sys

from servers.topology import Topology
from servers.workload import Workload

MTUS = (1500, 9000)
RESPONSE_SIZES = (1024, 8192)
CLIENTS = 2
DURATION_S = 1.5


def one(mtu: int, response_size: int) -> dict[str, object]:
    with (
        Topology(mtu) as topo,
        Workload(
            topo,
            transport="rds",
            clients=CLIENTS,
            response_size=response_size,
            duration=DURATION_S,
        ) as load,
    ):
        result = load.wait()
    return {
        "mtu": mtu,
        "response_size": response_size,
        "sent": result.sent,
        "received": result.received,
        "bad": result.bad,
        "timeouts": result.timeouts,
        "server": result.server,
    }


def main(out: str) -> int:
    rows = [one(mtu, size) for mtu in MTUS for size in RESPONSE_SIZES]
    with open(out, "w") as f:
        json.dump(rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
