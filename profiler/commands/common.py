"""What several commands share: root, checks of what they are given, saved runs in and
out, the live view.

Every argument is checked before any work starts (a bad one is a ``UsageError``: one
line, exit 2). What cannot be written at the end is never lost: the run goes under
``traces/`` instead (or the temporary folder if even that fails) and the command
says where, exiting 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from profiler import atomic, phases
from profiler.errors import SessionError, UsageError, one_line
from profiler.hooks import BOUNDARIES
from profiler.run import Run, default_trace_path
from profiler.views.console import output_console, plain_console
from profiler.views.live import LiveView


def need_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("tracing needs root (BPF and network namespaces)")


def live_view(no_live: bool) -> LiveView:
    """The live screen on a terminal; with --no-live or off a terminal only the final
    tables, printed once (as wide as views.console makes them)."""
    return LiveView(plain_console() if no_live else output_console())


# -- checks of the arguments, before any work ------------------------------------------


def _stat(path: Path, what: str) -> os.stat_result | None:
    """stat(path), None if there is nothing there; any other failure is bad input."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{what} {path}: {one_line(exc)}") from None


def _writable_folder(folder: Path, what: str, path: Path) -> None:
    st = _stat(folder, what)
    if st is None:
        raise UsageError(f"{what} {path}: folder {folder} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: folder {folder} is not writable")


def writable(path: Path | None, folder: bool = False, what: str = "output") -> None:
    """Refuse, before any work, an output that could not be written. A file: not a
    folder, in an existing writable folder. A folder (``folder``; made when missing):
    not a file, under a writable folder."""
    if path is None:
        return
    st = _stat(path, what)
    if folder:
        if st is not None:
            if not stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{what} {path}: is a file, not a folder")
            _writable_folder(path, what, path)
            return
        where = path.parent
        while _stat(where, what) is None and where != where.parent:
            where = where.parent
        _writable_folder(where, what, path)
        return
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path}: is a folder, not a file")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path}: is not a regular file")
    _writable_folder(path.parent, what, path)


def run_output(path: Path | None, what: str = "--out") -> None:
    """A saved run's destination: a file, or an existing folder to save it in."""
    if path is not None and path.is_dir():
        writable(path, folder=True, what=what)
    else:
        writable(path, what=what)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return a.absolute() == b.absolute()


def distinct(named: Sequence[tuple[str, Path | None]]) -> None:
    """Refuse two arguments naming the same file: one write would replace the other."""
    given = [(what, path) for what, path in named if path is not None]
    for i, (what, path) in enumerate(given):
        for other, again in given[i + 1 :]:
            if _same_file(path, again):
                raise UsageError(f"{what} and {other} name the same file {path}")


def readable_run(path: Path, what: str = "run") -> None:
    """A saved run to read: an existing, readable regular file."""
    st = _stat(path, what)
    if st is None:
        raise UsageError(f"{what} {path}: no such file")
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path}: is a folder, not a saved run")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path}: is not a regular file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path}: not readable")


def load_run(path: Path) -> Run:
    """A saved run; a file that is not one is bad input."""
    readable_run(path)
    try:
        return Run.load(path)
    except ValueError as exc:
        raise UsageError(one_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - anything a malformed document raises
        raise UsageError(f"{path}: not a stackprof run file ({type(exc).__name__})") from None


def usable_cpus() -> set[int]:
    """The CPUs this process (and so the workload it starts) may run on."""
    return set(os.sched_getaffinity(0))


def check_cpu(cpu: int | None, what: str) -> None:
    cpus = usable_cpus()
    if cpu is not None and cpu not in cpus:
        raise UsageError(f"{what} {cpu}: no such CPU here (usable: {_ranges(sorted(cpus))})")


def _ranges(values: Sequence[int]) -> str:
    """0-3,6 for [0, 1, 2, 3, 6]."""
    parts: list[str] = []
    for value in values:
        if parts and value == int(parts[-1].rpartition("-")[2]) + 1:
            parts[-1] = f"{parts[-1].partition('-')[0]}-{value}"
        else:
            parts.append(str(value))
    return ",".join(parts)


def check_hooks(kinds: Iterable[str], skip: Iterable[str], unused: Iterable[str] = ()) -> None:
    """Refuse hook kinds or skips that leave a required hook point no candidate at all
    (what the kernel refuses is found by loading, later: exit 1)."""
    kinds, skip = set(kinds), set(skip)
    for boundary in BOUNDARIES:
        if not boundary.required or boundary.name in unused:
            continue
        if boundary.name in skip:
            raise UsageError(f"--skip {boundary.name}: every run needs that hook point")
        can = sorted({c.kind for c in boundary.candidates})
        if not kinds & set(can):
            raise UsageError(
                f"--hooks {','.join(sorted(kinds))}: no kind given can hook "
                f"{boundary.name} (it needs one of {','.join(can)})"
            )


def check_listen(listen: tuple[str, int] | None) -> None:
    """The --metrics address: a name that resolves, a port that can be had now."""
    if listen is None:
        return
    host, port = listen
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"--metrics {host}:{port}: {one_line(exc)}") from None


# -- saving, never losing a run ----------------------------------------------------------


def _save_first(run: Run, places: Sequence[Path]) -> tuple[Path, list[str]]:
    """Save where the first place that takes it is; why each one before it did not."""
    failed: list[str] = []
    for place in places:
        try:
            with phases.during("save"):
                return run.save(place), failed
        except (OSError, ValueError) as exc:
            failed.append(f"cannot write {place}: {one_line(exc)}")
    raise SessionError("; ".join(failed) + " (the run is lost)")


def save_run(run: Run, wanted: Path | None) -> tuple[Path, str | None]:
    """Save a run where it was asked (None: traces/), else under traces/, else in the
    temporary folder; also what went wrong, in one line saying where it went."""
    default = default_trace_path(run.meta)
    spare = Path(tempfile.gettempdir()) / "stackprof" / default.name
    places = [wanted] if wanted else []
    places += [p for p in (default, spare) if p not in places]
    path, failed = _save_first(run, places)
    print(f"saved {path}", file=sys.stderr)
    if not failed:
        return path, None
    return path, f"{failed[0]}; the run is saved as {path}"


def save(run: Run, args: argparse.Namespace, several: bool = False) -> list[str]:
    """Save under traces/ (or --out: a file, or a folder to save in, always a folder
    when several runs are made) and write --json; what could not be written."""
    out: Path | None = args.out
    if out is not None and (several or out.is_dir()):
        out = out / default_trace_path(run.meta).name
    with phases.uninterrupted():  # Ctrl-C or SIGTERM now acts once both are written
        path, problem = save_run(run, out)
        problems = [problem] if problem else []
        if args.json and not several:
            problems += write_summary(run, args.json, path)
    return problems


def write_summary(run: Run, path: Path, saved: Path | None = None) -> list[str]:
    """The ``--json`` document, atomically; what could not be written."""
    return write_json(path, run.summary(), saved)


def write_json(path: Path, doc: object, saved: Path | None = None) -> list[str]:
    try:
        with phases.during("save"):
            atomic.write_text(path, json.dumps(doc, indent=1))
    except (OSError, ValueError) as exc:
        where = f" (the run is saved as {saved})" if saved else ""
        return [f"cannot write --json {path}: {one_line(exc)}{where}"]
    return []


def save_interval(run: Run, args: argparse.Namespace) -> list[str]:
    """One interval of a run that goes on until stopped: its own file, numbered, in
    --out (a folder) or traces/. What could not be written is said at once (the run
    goes on)."""
    default = default_trace_path(run.meta, args.out or Path("traces"))
    wanted = default.with_name(f"{default.stem}-i{run.meta['interval']:04d}.json")
    with phases.uninterrupted():
        _, problem = save_run(run, wanted)
    if problem:
        print(f"stackprof: {problem}", file=sys.stderr)
    return [problem] if problem else []


def outcome(problems: Sequence[str], interrupted: bool = False) -> int:
    """The end of a command that saved: 130 if interrupted, 1 if something could not
    be written where asked (each said in one line), else 0."""
    if interrupted:
        for problem in problems:
            print(f"stackprof: {problem}", file=sys.stderr)
        raise KeyboardInterrupt
    if problems:
        for problem in problems[:-1]:
            print(f"stackprof: {problem}", file=sys.stderr)
        raise SessionError(problems[-1])
    return 0
