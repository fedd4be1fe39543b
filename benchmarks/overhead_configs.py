"""What each configuration of the overhead benchmark attaches, and how it is attached.

- ``none``: nothing.
- ``empty`` and ``clock``: bpf/empty.bpf.c's programs (clock: each takes one timestamp),
  generated from stackprof's own program list, loaded here and attached to exactly the
  hooks stackprof attach chooses (kprobes to the symbols it resolved).
- ``stackprof``, ``lean``, ``sample16``: the real ``python -m profiler attach`` as a user
  runs it, filtered on the service port and the lab's namespaces, with ``--detail lean``
  or ``--sample 16`` for the last two when this stackprof has them (else: unavailable).
  Its start is timed to the moment its programs are attached (``STACKPROF_PAUSE_AT=attach``
  makes it say so on stderr and stop; it is continued at once), and its memory read
  from /proc (VmRSS when attached, VmHWM before it is stopped).

Every configuration yields the ids of its programs, so that the kernel's run count and
run time of each (BPF stats) are read the same way for an in-process object and for
another process's.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.overhead_load import Lab, die_with_parent
from profiler import resources
from profiler.libbpf import BPFObject
from profiler.loader import OBJECT, HookChoice, attach_candidate

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ("none", "empty", "clock", "stackprof", "lean", "sample16")
FLOORS = {"empty": resources.bpf_object("empty"), "clock": resources.bpf_object("clock")}
# The attach options of each stackprof configuration, and the option that must be in
# ``stackprof attach --help`` for it to be available.
VARIANTS: dict[str, tuple[str, ...]] = {
    "stackprof": (),
    "lean": ("--detail", "lean"),
    "sample16": ("--sample", "16"),
}
ATTACH_TIMEOUT_S = 300.0  # Python under emulation (the guest test) starts ~10x slower
STOP_TIMEOUT_S = 60.0
PAUSED = "paused at attach"
START_METHOD = (
    "exec of `python -m profiler attach` to its 'paused at attach' line "
    "(STACKPROF_PAUSE_AT=attach: every program attached; it is continued at once)"
)


class AttachFailed(RuntimeError):
    """stackprof attach exited, or never said it was attached."""


@dataclass
class Attached:
    """A configuration's programs (id -> name) and, for stackprof, its process's figures."""

    config: str
    programs: dict[int, str] = field(default_factory=dict)
    start_s: float | None = None  # from exec to every program attached
    rss_attached_mib: float | None = None
    peak_rss_mib: float | None = None
    traced: dict[str, dict[str, int]] = field(default_factory=dict)  # its --json datagrams
    said: list[str] = field(default_factory=list)  # its stderr until attached (--verbose)


def chosen_programs(choice: HookChoice) -> set[str]:
    return {p for c in choice.chosen.values() if c for p in c.programs}


def attach_help() -> str:
    """``stackprof attach --help`` of the stackprof this checkout runs."""
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "attach", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc.stdout


def verbose(help_text: str) -> tuple[str, ...]:
    """--verbose when attach has it: what it says of its own start goes into the JSON."""
    return ("--verbose",) if "--verbose" in help_text else ()


def availability(help_text: str) -> dict[str, str | None]:
    """Per stackprof configuration, None if this stackprof accepts its options, else why not."""
    found: dict[str, str | None] = {}
    for config, options in VARIANTS.items():
        missing = [o for o in options if o.startswith("--") and o not in help_text]
        found[config] = f"unavailable: attach has no {', '.join(missing)}" if missing else None
    return found


def check_floor_objects(names: set[str]) -> None:
    """The floor objects have each chosen program under stackprof's name and section
    (only a build older than bpf/programs.def fails here)."""
    with BPFObject(OBJECT) as real:
        want = {p.name: p.section for p in real.programs() if p.name in names}
    for path in (*FLOORS.values(), resources.bpf_object("stampcount")):
        with BPFObject(path) as floor:
            have = {p.name: p.section for p in floor.programs()}
        wrong = sorted(n for n, sec in want.items() if have.get(n) != sec)
        if wrong:
            raise SystemExit(f"{path} lacks or mis-sections {wrong}: stale build, run make -C bpf")


@contextlib.contextmanager
def floor(config: str, choice: HookChoice) -> Iterator[Attached]:
    """Empty (or clock) programs on the hooks stackprof chose, attached as it attaches its own."""
    names = chosen_programs(choice)
    with BPFObject(FLOORS[config]) as obj:
        obj.autoload_only(names)
        obj.load()
        for candidate in choice.chosen.values():
            if candidate:
                attach_candidate(obj, candidate)
        yield Attached(config, {p.info().id: p.name for p in obj.programs() if p.name in names})


def _status_kib(pid: int, field_name: str) -> int | None:
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM), None once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    return None


def _mib(kib: int | None) -> float | None:
    return kib / 1024 if kib is not None else None


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "?"


def program_ids(pid: int) -> list[int]:
    """Ids of the BPF programs process pid holds."""
    ids = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog":
                    info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                    found = re.search(r"^prog_id:\s*(\d+)", info, re.MULTILINE)
                    if found:
                        ids.append(int(found[1]))
    return sorted(set(ids))


def program_names(ids: list[int]) -> dict[int, str]:
    """Full names of programs by id: bpftool reads them from their BTF (the kernel's
    own name field keeps 15 characters, too few to tell stackprof's apart)."""
    proc = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30
    )
    listed = {p["id"]: p.get("name", "?") for p in json.loads(proc.stdout or "[]")}
    return {i: listed.get(i, f"prog{i}") for i in ids}


def _lines(stream: object, into: queue.Queue[str | None]) -> None:
    """Copy a pipe's lines into a queue (None at its end): read with a timeout."""
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)


def _wait_attached(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> list[str]:
    """Until stackprof says it is attached and has stopped itself (what it said before
    that, e.g. its --verbose timings); AttachFailed else."""
    said: list[str] = []
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AttachFailed(f"not attached after {ATTACH_TIMEOUT_S:.0f} s") from None
        if line is None:
            raise AttachFailed(f"exited {proc.wait()}: {''.join(said[-5:]).strip()}")
        if PAUSED in line:
            return said
        said.append(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (and SIGCONT, should it still be stopped), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def attach_argv(
    config: str, lab: Lab, kinds: tuple[str, ...], out: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    port = lab.port
    return [
        *(sys.executable, "-m", "profiler", "attach", "--ports", f"{port}-{port}"),
        *("--netns", f"{lab.topo.client_ns},{lab.topo.server_ns}", "--duration", "0"),
        *("--no-live", "--out", str(out), "--json", str(out / "summary.json")),
        *("--hooks", ",".join(kinds), *VARIANTS[config], *extra),
    ]


@contextlib.contextmanager
def stackprof(
    config: str,
    lab: Lab,
    kinds: tuple[str, ...],
    extra: tuple[str, ...] = (),
    repo: Path = REPO,
) -> Iterator[Attached]:
    """``stackprof attach`` of the checkout at repo in a process of its own, timed from
    start to attached."""
    att = Attached(config)
    with tempfile.TemporaryDirectory(prefix="stackprof-overhead-") as out:
        env = {**os.environ, "PYTHONPATH": str(repo), "STACKPROF_PAUSE_AT": "attach"}
        started = time.monotonic()
        proc = subprocess.Popen(
            attach_argv(config, lab, kinds, Path(out), extra),
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
        try:
            att.said = [line.rstrip() for line in _wait_attached(proc, lines)][-10:]
            att.start_s = time.monotonic() - started
            while _state(proc.pid) not in ("T", "t") and proc.poll() is None:
                time.sleep(0.005)  # it said so, now it stops: continue it only once stopped
            att.rss_attached_mib = _mib(_status_kib(proc.pid, "VmRSS"))
            att.programs = program_names(program_ids(proc.pid))
            proc.send_signal(signal.SIGCONT)
            yield att
            att.peak_rss_mib = _mib(_status_kib(proc.pid, "VmHWM"))
        finally:
            _stop(proc)
        att.traced = _traced(Path(out) / "summary.json")


def _traced(path: Path) -> dict[str, dict[str, int]]:
    """sent and traced per path from attach's --json: proof that it followed the datagrams."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        rows = json.loads(path.read_text())["datagrams"]
        return {p: {k: int(r.get(k, 0)) for k in ("sent", "traced")} for p, r in rows.items()}
    return {}


@contextlib.contextmanager
def attached(
    config: str, lab: Lab, choice: HookChoice, kinds: tuple[str, ...], extra: tuple[str, ...] = ()
) -> Iterator[Attached]:
    """A configuration's programs attached for the duration of the block (extra: more
    options for stackprof attach)."""
    if config == "none":
        yield Attached(config)
    elif config in FLOORS:
        with floor(config, choice) as att:
            yield att
    else:
        with stackprof(config, lab, kinds, extra) as att:
            yield att


def attach_figures(attaches: list[Attached]) -> dict[str, Any]:
    """Start time (median over rounds) and memory (max) of one stackprof configuration."""
    starts = [a.start_s for a in attaches if a.start_s is not None]
    peaks = [a.peak_rss_mib for a in attaches if a.peak_rss_mib is not None]
    attached_rss = [a.rss_attached_mib for a in attaches if a.rss_attached_mib is not None]
    return {
        "start_s": statistics.median(starts) if starts else None,
        "start_s_rounds": starts,
        "rss_attached_mib": max(attached_rss, default=None),
        "peak_rss_mib": max(peaks, default=None),
        "traced": attaches[-1].traced if attaches else {},
        "programs": len(attaches[-1].programs) if attaches else 0,
        "method": START_METHOD,
        "said": attaches[-1].said if attaches else [],
    }
