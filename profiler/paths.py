"""The paths of a run: the datagram paths flights follow, and the residence paths.

A datagram path (request, response) has the transport's stages; a residence path
(server, client) has one sample per request answered, with stages of its own, some
named like a datagram stage but spanning other boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from profiler.hooks import STAGE_SPANS, run_stages

# The paths flights follow (a datagram each way), and the residence paths: one
# sample per request answered, on the host serving the ports and on the clients'.
DATAGRAM_PATHS = ("request", "response")
RESIDENCE_STAGES: dict[str, tuple[str, ...]] = {
    "server": ("total", "rx_stack", "sock_wait", "app", "tx_stack"),
    "client": ("total", "tx_stack", "away", "rx_stack", "sock_wait", "recv"),
}
# A residence stage's boundaries (its name in STAGE_SPANS is a datagram stage's).
RESIDENCE_SPANS: dict[str, tuple[str, str]] = {
    "rx_stack": ("dev_rx", "sk_enqueue"),
    "app": ("recv_return", "send_enter"),
    "tx_stack": ("send_enter", "dev_xmit"),
    "away": ("dev_xmit", "dev_rx"),
}
# Stages a datagram followed from one end only lacks: sent off the traced host
# (receive-only) it has none of the sender's; received off it (send-only), none
# of the receiver's.
SEND_SIDE = ("send", "qdisc", "driver", "udp_ip_tx", "fragment", "neigh_tx")
SEND_ONLY_STAGES = ("total", "send", "qdisc", "tx_frags", "udp_ip_tx", "fragment", "neigh_tx")


def path_stages(info: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The stages of one path of a run: a datagram path's from its metadata, a
    residence path's fixed."""
    return RESIDENCE_STAGES[path] if path in RESIDENCE_STAGES else run_stages(info)


def run_paths(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The paths a run has: the datagram paths, and the residence paths where the
    run paired requests with responses (runs saved before did not)."""
    return (*DATAGRAM_PATHS, *RESIDENCE_STAGES) if info.get("residence") else DATAGRAM_PATHS


def stage_span(path: str, stage: str) -> tuple[str, str]:
    """The boundaries a stage of a path runs between."""
    if path in RESIDENCE_STAGES and stage in RESIDENCE_SPANS:
        return RESIDENCE_SPANS[stage]
    return STAGE_SPANS[stage]
