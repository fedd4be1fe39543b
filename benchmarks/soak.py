"""Soak: does stackprof hold steady under full-rate load for minutes on end?

Usage (root): ``.venv/bin/python benchmarks/soak.py [--seconds 60] [--warmup S]
[--transport udp] [--mtu 9000] [--clients 8] [--json FILE]``

Runs the real ``stackprof trace`` (closed-loop clients at full rate, no think time)
for ``--seconds`` and, every second, samples from outside the process: its resident
memory (VmRSS), its open file descriptors, and the occupancy of its in-flight table
(the kernel's flight map, mmapped read-only through a copy of stackprof's own map fd,
``pidfd_getfd``). After the warm-up (default: 10 s or a tenth of the run, whichever is
longer, counted from the moment the programs are attached) it fits a line to RSS over
time and prints the slope and the growth it predicts over the rest of the run. At the
end, each path's ``total`` histogram must hold exactly the datagrams the kernel side
counted as traced.

Exit 1 if RSS grew more than 5% after the warm-up, if the open fds grew, or if a
histogram total and its count disagree; 2 on bad arguments; else 0.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler import abi, atomic  # noqa: E402
from profiler.run import Run  # noqa: E402

RSS_GROWTH_LIMIT = 0.05
FD_SLACK = 2  # a metrics scrape or a netlink socket may come and go
SYS_PIDFD_GETFD = 438  # the same number on every architecture
BPF_MAP_TYPE_ARRAY = 2
BPF_F_MMAPABLE = 0x400
SETUP_TIMEOUT_S = 120.0


@dataclass
class Sample:
    t: float  # seconds since the start of stackprof
    rss_kib: int
    fds: int
    flights: int | None  # occupied slots, None before the programs are attached


@dataclass
class Report:
    seconds: float
    warmup_s: float
    samples: list[Sample] = field(default_factory=list)
    rss_start_kib: float = 0.0
    rss_end_kib: float = 0.0
    rss_slope_kib_per_min: float = 0.0
    rss_growth: float = 0.0
    fds_after_warmup: tuple[int, int] = (0, 0)
    flights: dict[str, float] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    requests_per_s: float = 0.0
    failures: list[str] = field(default_factory=list)


def fields(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def rss_kib(pid: int) -> int:
    return int(fields(Path(f"/proc/{pid}/status"))["VmRSS"].split()[0])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class FlightTable:
    """stackprof's flight map, read from outside: the one its attached programs use (the
    hook proofs before them load throw-away copies), its fd copied out of the process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.view: Any = None
        self.map_id: int | None = None
        self._map: mmap.mmap | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _fdinfo(self) -> dict[int, dict[str, str]]:
        found = {}
        for fd in os.listdir(f"/proc/{self.pid}/fdinfo"):
            try:
                found[int(fd)] = fields(Path(f"/proc/{self.pid}/fdinfo/{fd}"))
            except OSError:
                continue
        return found

    def _is_flights(self, info: dict[str, str]) -> bool:
        return (
            info.get("map_type") == str(BPF_MAP_TYPE_ARRAY)
            and int(info.get("map_flags", "0"), 16) & BPF_F_MMAPABLE != 0
            and info.get("max_entries") == str(abi.CONST["SP_FLIGHT_ENTRIES"])
            and info.get("value_size") == str(ctypes.sizeof(abi.FlightSlot))
        )

    def _find_fd(self, infos: dict[int, dict[str, str]]) -> tuple[int, int] | None:
        """(fd, map id) of the flight map an attached program of the process uses."""
        candidates = {
            int(i["map_id"]): fd for fd, i in infos.items() if "map_id" in i and self._is_flights(i)
        }
        for prog_id in sorted({i["prog_id"] for i in infos.values() if "link_id" in i}):
            shown = subprocess.run(
                ["bpftool", "-j", "prog", "show", "id", prog_id],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if shown.returncode != 0:
                continue
            for map_id in json.loads(shown.stdout).get("map_ids", []):
                if map_id in candidates:
                    return candidates[map_id], map_id
        return None

    def occupied(self) -> int | None:
        """Slots holding a flight now, or None while no attached program has the map."""
        infos = self._fdinfo()
        held = {int(i["map_id"]) for i in infos.values() if "map_id" in i}
        if self.map_id is not None and self.map_id not in held:
            self.close()
        if self.view is None and not self._open(infos):
            return None
        return int(np.count_nonzero(self.view["key"]["proto"]))

    def _open(self, infos: dict[int, dict[str, str]]) -> bool:
        found = self._find_fd(infos)
        if found is None:
            return False
        target, self.map_id = found
        pidfd = os.pidfd_open(self.pid)
        try:
            fd = self._libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
        finally:
            os.close(pidfd)
        try:
            length = ctypes.sizeof(abi.FlightSlot) * abi.CONST["SP_FLIGHT_ENTRIES"]
            self._map = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        table = (abi.FlightSlot * abi.CONST["SP_FLIGHT_ENTRIES"]).from_buffer_copy(self._map)
        dtype = np.ctypeslib.as_array(table).dtype
        self.view = np.frombuffer(self._map, dtype=dtype)
        return True

    def close(self) -> None:
        self.view, self.map_id = None, None
        if self._map is not None:
            self._map.close()
            self._map = None


def line_fit(ts: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    slope, intercept = np.polyfit(np.array(ts), np.array(ys), 1)
    return float(slope), float(intercept)


def soak(args: argparse.Namespace, folder: Path) -> Report:
    report = Report(seconds=args.seconds, warmup_s=args.warmup)
    cmd = [sys.executable, "-m", "profiler", "trace", "--no-live", "--duration", str(args.seconds)]
    cmd += ["--transport", args.transport, "--mtu", str(args.mtu), "--clients", str(args.clients)]
    cmd += ["--out", str(folder / "run.json")]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    table = FlightTable(proc.pid)
    attached_at: float | None = None
    try:
        while proc.poll() is None:
            now = time.monotonic() - started
            try:
                sample = Sample(now, rss_kib(proc.pid), open_fds(proc.pid), table.occupied())
            except (OSError, KeyError, ValueError):
                break  # it is exiting
            if sample.flights is not None and attached_at is None:
                attached_at = now
            if attached_at is None and now > SETUP_TIMEOUT_S:
                proc.terminate()
                report.failures.append(f"programs not attached after {SETUP_TIMEOUT_S:.0f} s")
                break
            report.samples.append(sample)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started - now)))
        _, err = proc.communicate(timeout=120)
    finally:
        table.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        report.failures.append(f"stackprof trace exited {proc.returncode}: {err.strip()}")
        return report
    judge(report, attached_at or 0.0, Run.load(folder / "run.json"))
    return report


def judge(report: Report, attached_at: float, run: Run) -> None:
    """Slopes and limits after the warm-up; histogram totals against the counts."""
    # After the warm-up, until the trace's end (its exit is no part of the run).
    window = (attached_at + report.warmup_s, attached_at + report.seconds)
    warm = [s for s in report.samples if s.flights is not None and window[0] <= s.t <= window[1]]
    if len(warm) < 5:
        report.failures.append(f"only {len(warm)} samples after the warm-up: run longer")
        return
    ts = [s.t for s in warm]
    slope, intercept = line_fit(ts, [float(s.rss_kib) for s in warm])
    report.rss_start_kib = intercept + slope * ts[0]
    report.rss_end_kib = intercept + slope * ts[-1]
    report.rss_slope_kib_per_min = slope * 60
    report.rss_growth = (report.rss_end_kib - report.rss_start_kib) / report.rss_start_kib
    fds = [s.fds for s in warm]
    report.fds_after_warmup = (min(fds), max(fds))
    flights = [s.flights or 0 for s in warm]
    report.flights = {
        "min": min(flights),
        "mean": round(sum(flights) / len(flights), 1),
        "max": max(flights),
        "slots": abi.CONST["SP_FLIGHT_ENTRIES"],
    }
    if report.rss_growth > RSS_GROWTH_LIMIT:
        report.failures.append(
            f"RSS grew {report.rss_growth:.1%} after the warm-up (limit {RSS_GROWTH_LIMIT:.0%})"
        )
    if fds[-1] > fds[0] + FD_SLACK:
        report.failures.append(f"open fds grew from {fds[0]} to {fds[-1]}")
    for path in abi.PATHS:
        counted = run.datagrams.get(path, {})
        total = run.stage(path, "total").get_total_count()
        report.totals[path] = {
            "histogram_total": int(total),
            "traced": int(counted.get("traced", 0)),
            "sent": int(counted.get("sent", 0)),
        }
        if total != counted.get("traced"):
            report.failures.append(
                f"{path}: total histogram holds {total}, the kernel counted {counted.get('traced')}"
            )
    client = run.meta.get("client", {})
    if client.get("duration_s"):
        report.requests_per_s = client["received"] / client["duration_s"]


def show(report: Report) -> None:
    print(f"soak: {report.seconds:.0f} s of stackprof trace, warm-up {report.warmup_s:.0f} s")
    if report.samples:
        first, last = report.samples[0], report.samples[-1]
        print(f"  samples            {len(report.samples)} (t {first.t:.0f}..{last.t:.0f} s)")
    if report.rss_start_kib:
        print(
            f"  RSS after warm-up  {report.rss_start_kib / 1024:.1f} -> "
            f"{report.rss_end_kib / 1024:.1f} MiB (fit)"
        )
        print(f"  RSS slope          {report.rss_slope_kib_per_min:+.1f} KiB/min")
        print(f"  RSS growth         {report.rss_growth:+.2%} (limit {RSS_GROWTH_LIMIT:.0%})")
        print(f"  open fds           {report.fds_after_warmup[0]}..{report.fds_after_warmup[1]}")
        f = report.flights
        print(
            f"  flight table       {f['min']}..{f['max']} of {f['slots']} slots (mean {f['mean']})"
        )
        print(f"  requests/s         {report.requests_per_s:,.0f}")
        for path, row in report.totals.items():
            print(
                f"  {path:<9} total histogram {row['histogram_total']:,} = traced "
                f"{row['traced']:,} (sent {row['sent']:,})"
            )
    for failure in report.failures:
        print(f"FAIL {failure}")
    print("soak: " + ("FAIL" if report.failures else "ok"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the trace (60)")
    parser.add_argument("--minutes", type=float, help="the same in minutes (overrides --seconds)")
    parser.add_argument("--warmup", type=float, help="seconds left out of the fit")
    parser.add_argument("--transport", default="udp")
    parser.add_argument("--mtu", type=int, default=9000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the samples and figures here")
    args = parser.parse_args(argv)
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    if args.warmup is None:
        args.warmup = max(10.0, args.seconds / 10)
    if os.geteuid() != 0:
        parser.error("needs root (stackprof trace)")
    if args.seconds < args.warmup + 10:
        parser.error(f"--seconds must leave at least 10 s after the warm-up ({args.warmup:g} s)")
    with tempfile.TemporaryDirectory(prefix="stackprof-soak-") as tmp:
        report = soak(args, Path(tmp))
    show(report)
    if args.json:
        atomic.write_text(args.json, json.dumps(asdict(report), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
