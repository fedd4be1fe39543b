"""A sweep as data: the matrix of runs, one row per saved run, series, knees, the index.

``stackprof sweep`` makes one traced run per point of transports x MTUs x clients (x
frames per block or batch sizes, x repeats), saves each, and indexes them in the folder's
``sweep.json`` (:data:`FORMAT`): one row per run with what the seed paper plots and
tabulates. Views (:mod:`profiler.views.sweep`, :mod:`profiler.views.plots`) and
``report DIR`` read the index and the runs; nothing here collects or draws.

Row fields: transport, mtu, clients (per server for lms), fpb and batch where set,
repeat, ``requests_per_s`` (responses the clients verified per second), ``blocks_per_s``
(the same in 8 KiB blocks: an lms response carries one, an echo response of
``response_size`` bytes that fraction of one), ``rtt_p50_us``/``rtt_p99_us`` (client
round trip), ``server_cpu`` (server CPU seconds per second of load, in % of one CPU,
summed over the servers), ``server_cpu_us`` (per request), the run's file.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from profiler.run import Run, hist_summary

FORMAT = "stackprof-sweep"
VERSION = 1
INDEX = "sweep.json"
BLOCK = 8192
LMS_BLOCK = 8192
KNEE_FLAT = 1.10  # throughput grows less than 10% ...
KNEE_STEEP = 1.25  # ... while p50 grows more than 25%: the wall


@dataclass(frozen=True)
class Point:
    """One run of the matrix."""

    transport: str
    mtu: int
    clients: int
    fpb: int | str | None = None
    batch: int | str | None = None
    repeat: int = 0

    def name(self) -> str:
        """The run's file name in the sweep's folder."""
        parts = [self.transport, f"mtu{self.mtu}", f"c{self.clients}"]
        parts += [f"fpb{self.fpb}"] if self.fpb is not None else []
        parts += [f"b{self.batch}"] if self.batch is not None else []
        parts += [f"r{self.repeat}"] if self.repeat else []
        return "-".join(parts) + ".json"


def matrix(
    transports: Iterable[str],
    mtus: Iterable[int],
    clients: Iterable[int],
    fpbs: Iterable[int | str] | None = None,
    batches: Iterable[int | str] | None = None,
    repeat: int = 1,
) -> list[Point]:
    """Every point, series by series (transport, MTU, fpb/batch), clients ascending; the
    fpb values apply to packet-v3 only, batch values to udp-mmsg only."""
    points = []
    for transport in transports:
        knobs: list[tuple[int | str | None, int | str | None]] = [(None, None)]
        if transport == "packet-v3" and fpbs:
            knobs = [(f, None) for f in fpbs]
        elif transport == "udp-mmsg" and batches:
            knobs = [(None, b) for b in batches]
        for mtu in mtus:
            for fpb, batch in knobs:
                for count in sorted(clients):
                    for rep in range(repeat):
                        points.append(Point(transport, mtu, count, fpb, batch, rep))
    return points


def _per_s(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else 0.0


def row(run: Run, point: Point, file: str) -> dict[str, Any]:
    """What the sweep keeps of one run."""
    meta = run.meta
    client: Mapping[str, Any] = meta.get("client") or {}
    server: Mapping[str, Any] = meta.get("server") or {}
    seconds = float(client.get("duration_s") or 0.0)
    received = int(client.get("received", 0))
    lms = meta.get("workload") == "lms"
    block_share = 1.0 if lms else float(meta.get("response_size", BLOCK)) / BLOCK
    rtt = hist_summary(run.client_rtt)
    cpu_s = float(server.get("cpu_s", 0.0))
    requests = int(server.get("requests", 0))
    ring = server.get("ring_config") or {}
    return {
        **asdict(point),
        "workload": meta.get("workload", "echo"),
        "servers": (meta.get("lms") or {}).get("servers", 1),
        "requests_per_s": _per_s(received, seconds),
        "blocks_per_s": round(_per_s(received, seconds) * block_share, 1),
        "rtt_p50_us": rtt["p50_us"],
        "rtt_p99_us": rtt["p99_us"],
        "server_cpu": round(100 * cpu_s / seconds, 1) if seconds else None,
        "server_cpu_us": round(1e6 * cpu_s / requests, 2) if requests else None,
        "fpb_achieved": server.get("frames_per_block") or None,
        "block_size": ring.get("block_size"),
        "batch_mean": server.get("batch_mean") or None,
        "bad": int(client.get("bad", 0)),
        "timeouts": int(client.get("timeouts", 0)),
        "file": file,
    }


def series_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["transport"], r["mtu"], r.get("fpb"), r.get("batch"))


def series_label(key: tuple[Any, ...]) -> str:
    transport, mtu, fpb, batch = key
    label = f"{transport} MTU {mtu}"
    label += f" fpb {fpb}" if fpb is not None else ""
    return label + (f" batch {batch}" if batch is not None else "")


@dataclass
class SeriesPoint:
    """One client count of a series: the median over its repeats, and their spread."""

    clients: int
    blocks_per_s: float
    requests_per_s: float
    rtt_p50_us: float
    rtt_p99_us: float
    server_cpu: float | None
    server_cpu_us: float | None
    repeats: int
    spread: float  # (max - min) / median of requests/s over the repeats; 0 for one run


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[SeriesPoint]:
    """A series' rows (any order, repeats included) as points by clients ascending."""
    by_clients: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        if "error" not in r:
            by_clients.setdefault(int(r["clients"]), []).append(r)
    points = []
    for clients in sorted(by_clients):
        group = by_clients[clients]
        rates = [float(r["requests_per_s"]) for r in group]
        cpu = [float(r["server_cpu"]) for r in group if r.get("server_cpu") is not None]
        per_req = [float(r["server_cpu_us"]) for r in group if r.get("server_cpu_us")]
        mid = _median(rates)
        points.append(
            SeriesPoint(
                clients=clients,
                blocks_per_s=_median([float(r["blocks_per_s"]) for r in group]),
                requests_per_s=mid,
                rtt_p50_us=_median([float(r["rtt_p50_us"]) for r in group]),
                rtt_p99_us=_median([float(r["rtt_p99_us"]) for r in group]),
                server_cpu=_median(cpu) if cpu else None,
                server_cpu_us=_median(per_req) if per_req else None,
                repeats=len(group),
                spread=round((max(rates) - min(rates)) / mid, 3) if mid and len(rates) > 1 else 0.0,
            )
        )
    return points


def series(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], list[SeriesPoint]]:
    """Rows grouped into series (transport, MTU, fpb, batch), in the order first met."""
    grouped: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(series_key(r), []).append(r)
    return {key: aggregate(group) for key, group in grouped.items()}


def knee(points: Sequence[SeriesPoint]) -> SeriesPoint | None:
    """The point after which latency grows at flat throughput (the wall's foot): the first
    point that no later point beats by 10% in blocks/s, while the next point's p50 is over
    25% higher. None while the series is still horizontal (throughput kept growing)."""
    for i, (here, after) in enumerate(zip(points, points[1:], strict=False)):
        flat = max(p.blocks_per_s for p in points[i + 1 :]) < here.blocks_per_s * KNEE_FLAT
        if flat and after.rtt_p50_us > here.rtt_p50_us * KNEE_STEEP:
            return here
    return None


def fpb_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 1: per transport, MTU and clients with several frames per block (or batch
    sizes), requests/s and server CPU idle per value."""
    out = []
    for key, points in series(rows).items():
        transport, mtu, fpb, batch = key
        knob = fpb if fpb is not None else batch
        if knob is None:
            continue
        for p in points:
            idle = None if p.server_cpu is None else round(max(0.0, 100 - p.server_cpu), 1)
            out.append(
                {
                    "transport": transport,
                    "mtu": mtu,
                    "clients": p.clients,
                    "knob": "fpb" if fpb is not None else "batch",
                    "value": knob,
                    "requests_per_s": p.requests_per_s,
                    "server_cpu_idle": idle,
                    "spread": p.spread,
                }
            )
    return out


def auto_vs_fixed(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Where ``auto`` ran beside fixed values (same transport, MTU, clients): its requests/s
    against the best fixed value's, and the ratio (the issue's bar: within 10%)."""
    cells: dict[tuple[Any, ...], dict[Any, float]] = {}
    for key, points in series(rows).items():
        transport, mtu, fpb, batch = key
        knob = fpb if fpb is not None else batch
        if knob is None:
            continue
        kind = "fpb" if fpb is not None else "batch"
        for p in points:
            cells.setdefault((transport, mtu, p.clients, kind), {})[knob] = p.requests_per_s
    out = []
    for (transport, mtu, clients, kind), by_value in cells.items():
        fixed = {v: r for v, r in by_value.items() if v != "auto"}
        if "auto" not in by_value or not fixed:
            continue
        best = max(fixed, key=lambda v: fixed[v])
        auto = by_value["auto"]
        ratio = round(auto / fixed[best], 3) if fixed[best] else None
        out.append(
            {"transport": transport, "mtu": mtu, "clients": clients, "knob": kind,
             "auto_requests_per_s": auto, "best_fixed": best,
             "best_fixed_requests_per_s": fixed[best], "auto_over_best": ratio}
        )  # fmt: skip
    return out


def index_doc(
    config: Mapping[str, Any], rows: list[dict[str, Any]], diagnoses: list[dict[str, Any]]
) -> dict[str, Any]:
    """The sweep.json document."""
    knees = {
        series_label(key): (asdict(k) if (k := knee(points)) else None)
        for key, points in series(rows).items()
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": dict(config),
        "rows": rows,
        "knees": knees,
        "fpb_table": fpb_table(rows),
        "auto": auto_vs_fixed(rows),
        "diagnosis": diagnoses,
    }


def load_index(folder: Path) -> dict[str, Any]:
    """A sweep folder's index; ValueError if the folder holds none."""
    path = Path(folder) / INDEX
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder}: no readable sweep index ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a stackprof sweep index")
    return doc
