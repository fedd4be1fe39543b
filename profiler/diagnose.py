"""The diagnosis in words: what two runs at different MTUs (or any two runs) say, computed
only from the runs. Plain data and sentences; ``compare`` and ``sweep`` print them and
put them in their JSON (``diagnosis``).

For runs A and B (the smaller MTU first in a sweep): fragments per response; the kernel
path of a response, the sum of its stage medians without the waits (``sock_wait``,
``ring_wait``: time spent queued for a busy reader is load, not path), and how much more
it costs in one, split into fragmenting (``fragment``, or ``send`` where the kernel has
no hook inside it), the fragment train (``frag_train``) and reassembly (``reassembly``,
or ``ip_udp`` where unhooked); the server's CPU per request (µs, and % of a CPU); the
clients' throughput and RTT at the same client count; and what the cheaper path would save
at the other's load (kernel µs per response times its responses per second).

Noise: the spread of a figure across repeats of the same point ((max - min) / median); a
difference smaller than the spread (or than ``SINGLE_RUN_NOISE`` when there are no repeats
to measure it) is reported as too small to tell, never as a finding.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from profiler.run import Run, hist_summary

STREAMS = ("tcp", "rds")
SINGLE_RUN_NOISE = 0.10  # without repeats, differences under 10% are not called
WAITS = ("sock_wait", "ring_wait", "total")
PARTS = {
    "fragmenting": ("fragment", "send"),
    "fragment train": ("frag_train",),
    "reassembly": ("reassembly", "ip_udp"),
}
FINE = ("udp_ip_tx", "fragment", "neigh_tx", "ip_rcv", "ip_route", "ip_rx", "reassembly",
        "ip_local", "udp_rcv", "pkt_deliver")  # fmt: skip


def _p50(run: Run, path: str, stage: str) -> float | None:
    if stage in (run.meta.get("unobserved") or ()):
        return None
    summary = hist_summary(run.stage(path, stage))
    return float(summary["p50_us"]) if summary["count"] else None


def kernel_path_us(run: Run, path: str = "response") -> float:
    """The sum of the path's coarse stage medians, waits left out."""
    stages = [s for s in run.meta.get("stages") or () if s not in WAITS and s not in FINE]
    return round(sum(_p50(run, path, s) or 0.0 for s in stages), 2)


def fragments(run: Run, path: str = "response") -> float:
    return float(run.datagram_rows()[path]["fragments_per_datagram"])


def headline(run: Run) -> dict[str, float | None]:
    """Throughput, RTT and server CPU as the applications counted them."""
    client: Mapping[str, Any] = run.meta.get("client") or {}
    server: Mapping[str, Any] = run.meta.get("server") or {}
    seconds = float(client.get("duration_s") or 0.0)
    rtt = hist_summary(run.client_rtt)
    cpu_s, requests = float(server.get("cpu_s", 0.0)), int(server.get("requests", 0))
    return {
        "requests_per_s": round(client.get("received", 0) / seconds, 1) if seconds else None,
        "rtt_p50_us": float(rtt["p50_us"]) if rtt["count"] else None,
        "server_cpu_us": round(1e6 * cpu_s / requests, 2) if requests else None,
        "server_cpu_pct": round(100 * cpu_s / seconds, 1) if seconds and cpu_s else None,
    }


def parts_us(a: Run, b: Run, path: str = "response") -> dict[str, dict[str, Any]]:
    """Where the kernel path differs: per part, the stage measured and A − B in µs."""
    out = {}
    for part, candidates in PARTS.items():
        for stage in candidates:
            va, vb = _p50(a, path, stage), _p50(b, path, stage)
            if va is None and vb is None:
                continue
            out[part] = {"stage": stage, "delta_us": round((va or 0.0) - (vb or 0.0), 2)}
            break
    return out


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median of repeats; None without repeats."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else None


def _noise(spreads: Sequence[float | None]) -> float:
    known = [s for s in spreads if s is not None]
    return max(known) if known else SINGLE_RUN_NOISE


def _told(a: float | None, b: float | None, noise: float) -> bool:
    """Whether a and b differ by more than the noise (relative to the larger)."""
    if a is None or b is None:
        return False
    top = max(abs(a), abs(b))
    return bool(top) and abs(a - b) / top > noise


def _pct(noise: float) -> str:
    return f"{noise:.0%}"


def labels(a: Run, b: Run, fallback: tuple[str, str]) -> tuple[str, str]:
    """What tells the runs apart in words: "MTU 1500" / "MTU 9000" for one transport,
    "udp MTU 1500" / "tcp MTU 1500" across transports, else the fallback (file names)."""
    ta, tb = a.meta.get("transport"), b.meta.get("transport")
    ma, mb = a.meta.get("mtu"), b.meta.get("mtu")
    if ta == tb and ma != mb:
        return f"MTU {ma}", f"MTU {mb}"
    if ta != tb:
        return f"{ta} MTU {ma}", f"{tb} MTU {mb}"
    return fallback


def diagnose_pair(
    a: Run,
    b: Run,
    labels: tuple[str, str],
    repeats: tuple[Sequence[Run], Sequence[Run]] | None = None,
) -> dict[str, Any]:
    """The diagnosis of A against B as data, with its sentences. ``repeats``: every run
    of each side's point (A and B among them), to measure the noise."""
    la, lb = labels
    ha, hb = headline(a), headline(b)
    ka, kb = kernel_path_us(a), kernel_path_us(b)
    fa, fb = fragments(a), fragments(b)
    clients = a.meta.get("clients")
    server: Mapping[str, Any] = a.meta.get("server") or {}
    stream = a.meta.get("transport") in STREAMS
    size = float(server.get("bytes_sent", 0)) / max(1, int(server.get("responses", 1)))
    size -= 4 if stream else 0  # the length prefix
    sa, sb = repeats or ([a], [b])
    rate_noise = _noise([spread([headline(r)["requests_per_s"] or 0 for r in s]) for s in (sa, sb)])
    rtt_noise = _noise([spread([headline(r)["rtt_p50_us"] or 0 for r in s]) for s in (sa, sb)])
    kernel_noise = _noise([spread([kernel_path_us(r) for r in s]) for s in (sa, sb)])
    cpu_noise = _noise([spread([headline(r)["server_cpu_us"] or 0 for r in s]) for s in (sa, sb)])
    parts = parts_us(a, b)
    unit = "segment" if stream else "fragment"  # TCP: GSO segments, never IP fragments
    what = f"{size:,.0f}-byte response" if size > 0 else "response"
    sentences = [f"Each {what} is {fa:g} {unit}{'s' * (fa != 1)} at {la} and {fb:g} at {lb}."]
    delta = round(ka - kb, 2)
    if _told(ka, kb, kernel_noise):
        more, less = (la, lb) if delta > 0 else (lb, la)
        split = ", ".join(
            f"{name} {v['delta_us']:+.1f} µs ({v['stage']})" for name, v in parts.items()
        )
        sentences.append(
            f"The kernel path of a response costs {abs(delta):.1f} µs more at {more} than at "
            f"{less} ({ka:.1f} vs {kb:.1f} µs, stage medians without waits)"
            + (f"; {la} − {lb}: {split}." if split else ".")
        )
    else:
        sentences.append(
            f"The kernel path of a response is {ka:.1f} µs at {la} and {kb:.1f} µs at {lb}: "
            f"a difference within the noise ({_pct(kernel_noise)}), too small to tell."
        )
    cpu = ha["server_cpu_us"], hb["server_cpu_us"]
    if cpu[0] is not None and cpu[1] is not None:
        verdict = "" if _told(*cpu, cpu_noise) else f" (within the noise, {_pct(cpu_noise)})"
        sentences.append(
            f"Server CPU per request: {cpu[0]:.1f} µs at {la} ({ha['server_cpu_pct']}% of a "
            f"CPU) vs {cpu[1]:.1f} µs at {lb} ({hb['server_cpu_pct']}%){verdict}."
        )
    ra, rb = ha["requests_per_s"], hb["requests_per_s"]
    pa, pb = ha["rtt_p50_us"], hb["rtt_p50_us"]
    if ra is not None and rb is not None and pa is not None and pb is not None:
        told = _told(ra, rb, rate_noise) or _told(pa, pb, rtt_noise)
        at = f"At {clients} clients" if clients else "Under their loads"
        sentences.append(
            f"{at}: {la} serves {ra:,.0f} requests/s at RTT p50 {pa:,.0f} µs, "
            f"{lb} {rb:,.0f}/s at {pb:,.0f} µs"
            + (
                "."
                if told
                else f": the difference is within the runs' noise (throughput ±"
                f"{_pct(rate_noise)}, RTT ±{_pct(rtt_noise)}), too large to tell which is faster."
            )
        )
    saving = None
    if delta and ra and _told(ka, kb, kernel_noise):
        cheap, dear, rate = (lb, la, ra) if delta > 0 else (la, lb, rb or 0.0)
        cpu_ms = round(abs(delta) * rate / 1000, 1)
        saving = {
            "by": cheap,
            "us_per_response": abs(delta),
            "cpu_ms_per_s": cpu_ms,
        }
        sentences.append(
            f"At {dear}'s load ({rate:,.0f} responses/s), {cheap} would save about "
            f"{abs(delta):.1f} µs of kernel path per response: {cpu_ms:,.1f} ms "
            f"per second, {cpu_ms / 10:.1f}% of a CPU."
        )
    return {
        "a": la,
        "b": lb,
        "clients": clients,
        "fragments": [fa, fb],
        "kernel_path_us": [ka, kb],
        "parts_us": parts,
        "server_cpu_us": list(cpu),
        "server_cpu_pct": [ha["server_cpu_pct"], hb["server_cpu_pct"]],
        "requests_per_s": [ra, rb],
        "rtt_p50_us": [pa, pb],
        "saving": saving,
        "noise": {"requests_per_s": rate_noise, "rtt_p50_us": rtt_noise, "kernel": kernel_noise},
        "repeats": [len(sa), len(sb)],
        "sentences": sentences,
    }


def sweep_diagnoses(
    rows: Sequence[Mapping[str, Any]], load: Callable[[str], Run]
) -> list[dict[str, Any]]:
    """For every series that ran at two MTUs or more (same transport, fpb, batch): the
    smallest MTU against each larger one, at the largest client count both have."""
    groups: dict[tuple[Any, ...], dict[int, dict[int, list[str]]]] = {}
    for r in rows:
        if "error" in r or not r.get("file"):
            continue
        key = (r["transport"], r.get("fpb"), r.get("batch"))
        files = groups.setdefault(key, {}).setdefault(int(r["mtu"]), {})
        files.setdefault(int(r["clients"]), []).append(str(r["file"]))
    out = []
    for (transport, _, _), by_mtu in groups.items():
        mtus = sorted(by_mtu)
        for other in mtus[1:]:
            common = set(by_mtu[mtus[0]]) & set(by_mtu[other])
            if not common:
                continue
            clients = max(common)
            runs_a = [load(f) for f in by_mtu[mtus[0]][clients]]
            runs_b = [load(f) for f in by_mtu[other][clients]]
            labels = (f"{transport} MTU {mtus[0]}", f"{transport} MTU {other}")
            out.append(diagnose_pair(runs_a[0], runs_b[0], labels, (runs_a, runs_b)))
    return out
