"""Why a stage of a run has no sample: every silent stage is said, with its reason.

A stage can be silent because no hook could serve one of its boundaries on this
kernel, because the datagrams were followed from one end only (sent or received
off the traced host), or because a hooked boundary never fired for a followed
datagram (a NIC path the hook does not see). Computed from a Run alone, so live
views, saved runs and exports say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from profiler.paths import (
    DATAGRAM_PATHS,
    RESIDENCE_STAGES,
    SEND_ONLY_STAGES,
    SEND_SIDE,
    path_stages,
    run_paths,
    stage_span,
)
from profiler.run import Run, new_histogram

NO_HOOK = "no hook on this kernel"
FRAGMENT_STAGES = ("frag_train", "fragment", "reassembly", "ip_rx")
NO_ANSWER = {
    "server": "no request was both read and answered on this host: the server is off "
    "the traced host, or answers over a transport that is not UDP",
    "client": "no request was both sent and its response read on this host: the clients "
    "are off the traced host, or use a transport that is not UDP",
}


def _count(row: Mapping[str, Any], key: str) -> int:
    return int(row.get(f"kernel_{key}", 0) or 0)


def _one_sided(stage: str, row: Mapping[str, Any]) -> str | None:
    """The reason a datagram path followed from one end lacks this stage, if so."""
    delivered, send_only = _count(row, "delivered"), _count(row, "send_only")
    receive_only = _count(row, "receive_only")
    if stage == "tx_frags" and not send_only:
        return "no datagram of this path left the traced host: every receiver was on it"
    if stage in SEND_SIDE and delivered and receive_only == delivered and not send_only:
        return "sent off the traced host: these datagrams are followed from their receive"
    if send_only and not delivered and stage not in SEND_ONLY_STAGES:
        return (
            "received off the traced host: these datagrams are followed to their last "
            "fragment's driver transmit"
        )
    return None


def _reason(run: Run, path: str, stage: str, fired: set[str]) -> str:
    info = run.meta
    declared = info.get("unobserved_hooks", info.get("unobserved")) or ()
    if stage in declared:
        return str((info.get("unobserved_reasons") or {}).get(stage) or NO_HOOK)
    if info.get("untraced"):
        return str(info["untraced"])
    row = run.datagrams.get(path, {})
    if path in RESIDENCE_STAGES:
        return NO_ANSWER[path]
    if not _count(row, "delivered") and not _count(row, "send_only"):
        return "no datagram of this path was followed"
    one_sided = _one_sided(stage, row)
    if one_sided:
        return one_sided
    if (
        stage in FRAGMENT_STAGES
        and not run.frags.get(path, new_histogram()).get_value_at_percentile(100) > 1
    ):
        return "no datagram of this path was fragmented"
    hooks = info.get("hooks") or {}
    quiet = [b for b in stage_span(path, stage) if b not in fired] or [stage_span(path, stage)[1]]
    return "; ".join(
        f"its boundary {b} ({hooks.get(b) or 'unhooked'}) never fired for a followed datagram"
        for b in quiet
    )


def silent_stages(run: Run) -> dict[str, dict[str, str]]:
    """Per path, each stage without a sample and why."""
    out: dict[str, dict[str, str]] = {}
    for path in run_paths(run.meta):
        stages = path_stages(run.meta, path)
        counted = [s for s in stages if run.stage(path, s).get_total_count()]
        fired = {b for s in counted for b in stage_span(path, s)}
        out[path] = {s: _reason(run, path, s, fired) for s in stages if s not in counted}
    return out


def note_unobserved(run: Run) -> None:
    """Write the silent stages into the run's metadata: ``unobserved_paths`` (per path,
    stage -> reason), and in ``unobserved`` (with ``unobserved_reasons``) the stages
    silent on every datagram path that followed anything."""
    meta = run.meta
    meta.setdefault("unobserved_hooks", list(meta.get("unobserved") or ()))
    silent = silent_stages(run)
    meta["unobserved_paths"] = silent
    busy = [
        p
        for p in DATAGRAM_PATHS
        if _count(run.datagrams.get(p, {}), "delivered")
        or _count(run.datagrams.get(p, {}), "send_only")
    ]
    if not busy:
        return
    everywhere = set.intersection(*(set(silent.get(p, {})) for p in busy))
    hooked_out = list(meta["unobserved_hooks"])
    quiet = [s for s in path_stages(meta, busy[0]) if s in everywhere and s not in hooked_out]
    meta["unobserved"] = hooked_out + quiet
    why = silent[busy[0]]
    meta["unobserved_reasons"] = {
        s: why.get(s, "no hook on this kernel") for s in meta["unobserved"]
    }
