"""``stackprof sweep``: the seed paper's results as one command. Transports x MTUs x
clients (x frames per block, x batch sizes, x repeats), one traced run each, saved in one
folder with an index (``sweep.json``), the wall drawn (``wall.png``, ``wall.svg``) and
printed, Table 1 when frames per block vary, and the diagnosis of MTU pairs.

Each run is ``stackprof trace`` in a process of its own (``python -m profiler trace``):
the sweep never imports the servers, and a run that fails is a row saying why, not the
end of the sweep. Ctrl-C stops after the run in progress; the index then holds what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from profiler import atomic, diagnose
from profiler import sweep as data
from profiler.commands.common import load_run, need_root, writable
from profiler.errors import UsageError
from profiler.sweep import Point
from profiler.transports import rds_missing
from profiler.views.console import output_console
from profiler.views.plots import draw_wall
from profiler.views.sweep import progress, render_sweep

RUN_SLACK_S = 120.0  # on top of a run's duration: topology, BPF, start-up, the last replies
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def check(args: argparse.Namespace) -> None:
    """Every argument, before any run."""
    if "rds" in args.transport and (why := rds_missing()):
        raise UsageError(f"transport rds: {why}")
    if args.frames_per_block and "packet-v3" not in args.transport:
        raise UsageError("--frames-per-block sweeps packet-v3: add it to --transport")
    if args.batch and "udp-mmsg" not in args.transport:
        raise UsageError("--batch sweeps udp-mmsg: add it to --transport")
    if args.workload == "echo" and args.servers not in (None, 1):
        raise UsageError("--servers is for --workload lms (echo runs one server)")
    writable(args.out, folder=True, what="--out")
    writable(args.json, what="--json")


def trace_argv(args: argparse.Namespace, point: Point, file: Path) -> list[str]:
    """The ``stackprof trace`` command line of one point."""
    argv = [sys.executable, "-m", "profiler", "trace", "--no-live", "--out", str(file)]
    argv += ["--transport", point.transport, "--mtu", str(point.mtu)]
    argv += ["--clients", str(point.clients), "--duration", str(args.duration)]
    argv += ["--request-size", str(args.request_size), "--response-size", str(args.response_size)]
    argv += ["--block-timeout-ms", str(args.block_timeout_ms)]
    argv += ["--frames-per-block", str(point.fpb)] if point.fpb is not None else []
    argv += ["--batch", str(point.batch)] if point.batch is not None else []
    for name in ("server_cpu", "client_cpu"):
        value = getattr(args, name)
        argv += [f"--{name.replace('_', '-')}", str(value)] if value is not None else []
    if args.workload == "lms":
        argv += ["--workload", "lms", "--servers", str(args.servers or 4)]
        argv += ["--serve-us", str(args.serve_us), "--think-us", str(args.think_us)]
        argv += ["--blocks", str(args.blocks)]
    return argv


def config(args: argparse.Namespace) -> dict[str, Any]:
    """How the sweep was asked for (the index's ``config``)."""
    keys = ("transport", "mtu", "clients", "frames_per_block", "batch", "block_timeout_ms",
            "duration", "repeat", "request_size", "response_size", "workload")  # fmt: skip
    out = {k: getattr(args, k) for k in keys}
    if args.workload == "lms":
        out["lms"] = {"servers": args.servers or 4, "serve_us": args.serve_us}
        out["lms"] |= {"think_us": args.think_us, "blocks": args.blocks}
    out["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return out


def one_run(args: argparse.Namespace, point: Point, folder: Path) -> dict[str, Any]:
    """Run one point; its row (or a row with ``error``)."""
    file = folder / point.name()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        trace_argv(args, point, file),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _, err = proc.communicate(timeout=args.duration + RUN_SLACK_S)
    except KeyboardInterrupt:
        proc.communicate(timeout=30)  # the run saves what it measured, then the sweep stops
        raise
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode != 0 or not file.exists():
        lines = [line for line in (err or "").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        return {**asdict(point), "error": why, "file": None}
    return data.row(load_run(file), point, file.name)


def wall_title(cfg: dict[str, Any]) -> str:
    return f"stackprof sweep: {cfg.get('workload', 'echo')}, {cfg.get('duration', 0):g} s runs"


def write_outputs(
    folder: Path, args: argparse.Namespace, rows: list[dict[str, Any]], final: bool
) -> dict[str, Any]:
    """The index (after every run), and at the end the diagnoses and the plots."""
    diagnoses = (
        diagnose.sweep_diagnoses(rows, lambda name: load_run(folder / name)) if final else []
    )
    doc = data.index_doc(config(args), rows, diagnoses)
    atomic.write_text(folder / data.INDEX, json.dumps(doc, indent=1))
    if final and not args.no_plot:
        for suffix, content in draw_wall(rows, wall_title(doc["config"])).items():
            atomic.write_bytes(folder / f"wall.{suffix}", content)
    if final and args.json:
        atomic.write_text(args.json, json.dumps(doc, indent=1))
    return doc


def run(args: argparse.Namespace) -> int:
    check(args)
    need_root()
    folder = args.out or Path("traces") / time.strftime("sweep-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    points = data.matrix(
        args.transport, args.mtu, args.clients, args.frames_per_block, args.batch, args.repeat
    )
    rows: list[dict[str, Any]] = []
    console = output_console()
    try:
        with progress(console) as bar:
            task = bar.add_task("", total=len(points))
            for n, point in enumerate(points, 1):
                what = f"{point.transport} MTU {point.mtu} · {point.clients} clients"
                what += f" · fpb {point.fpb}" if point.fpb is not None else ""
                what += f" · batch {point.batch}" if point.batch is not None else ""
                bar.update(task, description=f"run {n} of {len(points)}: {what}")
                rows.append(one_run(args, point, folder))
                bar.advance(task)
                write_outputs(folder, args, rows, final=False)
    except KeyboardInterrupt:
        write_outputs(folder, args, rows, final=True)
        print(f"sweep interrupted: {len(rows)} of {len(points)} runs in {folder}", file=sys.stderr)
        raise
    doc = write_outputs(folder, args, rows, final=True)
    console.print(render_sweep(doc))
    print(f"saved {folder}", file=sys.stderr)
    return 0


def check_folder(folder: Path, as_json: Path | None = None) -> None:
    """A folder to report must hold a sweep's index."""
    if not (folder / data.INDEX).is_file():
        raise UsageError(f"{folder}: a folder without a sweep index ({data.INDEX})")
    writable(as_json, what="--json")


def render_folder(folder: Path, as_json: Path | None = None) -> int:
    """``stackprof report DIR``: a saved sweep re-rendered (plots redrawn from its index)."""
    try:
        doc = data.load_index(folder)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = doc.get("rows", [])
    if not doc.get("diagnosis"):
        doc["diagnosis"] = diagnose.sweep_diagnoses(rows, lambda name: load_run(folder / name))
    if os.access(folder, os.W_OK):
        for suffix, content in draw_wall(rows, wall_title(doc.get("config") or {})).items():
            atomic.write_bytes(folder / f"wall.{suffix}", content)
    output_console().print(render_sweep(doc))
    if as_json is not None:
        atomic.write_text(as_json, json.dumps(doc, indent=1))
    return 0
