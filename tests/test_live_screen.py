"""What a person sees: `stackprof trace` in a real terminal (tmux), read off the screen.

One short trace runs in a 140x60 tmux pane; the pane is captured every few
hundred ms while it runs and once more after it ends. The tests read those
captures as a person reads the screen. tmux runs on a private socket under the
test's temporary directory, so nothing of anyone else's is touched and the
whole server goes at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers.topology import remove_leftovers

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF and network namespaces"),
]

REPO = Path(__file__).resolve().parent.parent
STACKPROF = Path(sys.executable).parent / "stackprof"
WIDTH, HEIGHT = 140, 60
DURATION_S = 6
RUN_TIMEOUT_S = 120.0  # hook probing, the trace, teardown and saving on a busy machine
STAGES = (
    "total",
    "send",
    "qdisc",
    "driver",
    "backlog",
    "frag_train",
    "ip_udp",
    "sock_wait",
    "recv",
)
HEADER = re.compile(
    rf"^stackprof · udp · MTU 1500 · clients 2 · kernel \S+ · req 512 B / resp 8192 B"
    rf" · (?:(\d+)/)?{DURATION_S} s$",
    re.MULTILINE,
)
EXIT = re.compile(r"^rc=(\d+)$", re.MULTILINE)


class Tmux:
    """One detached tmux session on a private server; kill() ends the server."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.name = f"stackprof-{uuid.uuid4().hex[:8]}"

    def tmux(self, *args: str) -> str:
        """Run a tmux command against this server; its stdout.

        The environment is passed explicitly: readline, once imported in this
        process, exports COLUMNS=80/LINES=24 at the C level; a server started with
        them would hand them to the command, and rich would draw 80 columns wide
        in a 140-column pane."""
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        proc = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        return proc.stdout

    def start(self, command: str) -> None:
        """Run command then print its exit status; the pane stays up 30 s to be read."""
        shell = f"cd {shlex.quote(str(REPO))} && {command}; echo rc=$?; sleep 30"
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT), shell)
        assert self.tmux("display", "-p", "-t", self.name, "#{window_width}x#{window_height}") == (
            f"{WIDTH}x{HEIGHT}\n"
        )

    def screen(self, history: bool = False) -> str:
        """The visible pane, or with history everything that scrolled off it too;
        lines the terminal wrapped are joined back, trailing blanks dropped."""
        extra = ["-S", "-"] if history else []
        text = self.tmux("capture-pane", "-p", "-J", "-t", self.name, *extra)
        return "\n".join(line.rstrip() for line in text.splitlines())

    def kill(self) -> None:
        self.tmux("kill-server")
        self.socket.unlink(missing_ok=True)


@contextlib.contextmanager
def tmux_session(tmp: Path) -> Iterator[Tmux]:
    session = Tmux(tmp / "tmux.sock")
    try:
        yield session
    finally:
        session.kill()


@dataclass
class Trace:
    """The screens of one live trace: live captures in order, and the whole terminal
    (history included) after it exited."""

    live: list[str]
    final: str
    saved: Path


def wait_exit(session: Tmux, timeout: float) -> int:
    """The command's exit status once `rc=N` is on the screen (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = EXIT.search(session.screen(history=True))
        if found:
            return int(found[1])
        time.sleep(0.2)
    raise AssertionError(f"no exit status on screen after {timeout} s:\n{session.screen()}")


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trace]:
    """Run one live trace in tmux, capturing the pane a few times a second. A live
    screen counts only when two captures in a row agree: a capture taken while the
    terminal is half-way through a redraw could mix two frames."""
    tmp = tmp_path_factory.mktemp("live")
    saved = tmp / "run.json"
    live: list[str] = []
    with tmux_session(tmp) as session:
        try:
            session.start(
                f"{shlex.quote(str(STACKPROF))} trace --mtu 1500 --duration {DURATION_S}"
                f" --clients 2 --out {shlex.quote(str(saved))}"
            )
            deadline = time.monotonic() + RUN_TIMEOUT_S
            previous = ""
            while time.monotonic() < deadline:
                screen = session.screen()
                if EXIT.search(session.screen(history=True)):
                    break
                if screen == previous and HEADER.search(screen) and screen not in live[-1:]:
                    live.append(screen)
                previous = screen
                time.sleep(0.2)
            assert wait_exit(session, 1.0) == 0, session.screen(history=True)
            yield Trace(live, session.screen(history=True), saved)
        finally:
            remove_leftovers()


def rows(screen: str, title: str) -> dict[str, list[str]]:
    """The rows of the table titled title: first cell -> the other cells."""
    lines = screen.splitlines()
    start = lines.index(title)
    table: dict[str, list[str]] = {}
    for line in lines[start + 4 :]:
        if not line.strip():
            break
        cells = line.split()
        table[cells[0]] = cells[1:]
    return table


def request_total(screen: str) -> int:
    return int(rows(screen, "request path (µs)")["total"][0])


def elapsed(screen: str) -> int:
    """The whole seconds elapsed that the header shows."""
    found = HEADER.search(screen)
    assert found and found[1], screen
    return int(found[1])


def test_live_screen_shows_the_header_and_both_stage_tables(trace: Trace) -> None:
    """While it runs: a header that says what is measured, and the stages of both paths."""
    assert len(trace.live) >= 2, "fewer than two live screens captured"
    for screen in trace.live:
        assert 0 <= elapsed(screen) <= DURATION_S, screen  # the clock stops at the duration
        for path in ("request", "response"):
            table = rows(screen, f"{path} path (µs)")
            assert set(STAGES) <= set(table), (path, screen)
        assert any(line.startswith("missed events: flight_full") for line in screen.splitlines())


def test_live_counts_grow_about_once_a_second(trace: Trace) -> None:
    """The screen refreshes during the run: later screens show more datagrams."""
    clock = [elapsed(s) for s in trace.live]
    assert clock == sorted(clock), f"the header's clock went backwards: {clock}"
    by_second = {elapsed(s): request_total(s) for s in trace.live}
    seconds = sorted(by_second)
    assert len(seconds) >= 2, f"screens from too few distinct seconds: {seconds}"
    counts = [by_second[s] for s in seconds]
    assert counts == sorted(counts) and counts[0] < counts[-1], by_second


def test_final_screen_keeps_the_tables_and_says_where_it_saved(trace: Trace) -> None:
    """After the run the whole final report stays in the terminal, then `saved PATH`."""
    final = trace.final
    assert HEADER.search(final)
    for path in ("request", "response"):
        table = rows(final, f"{path} path (µs)")
        assert set(STAGES) <= set(table)
        assert int(table["total"][0]) > 0
    missed = rows(final, "missed events")
    assert {"flight_full", "key_reused", "pair_mismatch", "out_of_range"} <= set(missed)
    assert re.search(r"^hooks: send_enter=", final, re.MULTILINE)
    assert f"saved {trace.saved}" in final.splitlines()
    assert trace.saved.is_file() and trace.saved.stat().st_size > 0


def test_missed_events_and_hooks_visible_while_running(trace: Trace) -> None:
    """The missed-event counters are shown 'so a clean run is visibly clean': a person
    watching the run on a 60-row terminal should see them, and the hooks line."""
    screen = trace.live[-1]
    assert "flight_full" in screen and "hooks: " in screen


def test_bad_input_is_one_line_and_status_2(tmp_path: Path) -> None:
    """Bad input: one line on the terminal, `stackprof: error: ...`, exit status 2."""
    with tmux_session(tmp_path) as session:
        session.start(f"{shlex.quote(str(STACKPROF))} trace --mtu 20")
        assert wait_exit(session, 30.0) == 2
        lines = [line for line in session.screen(history=True).splitlines() if line.strip()]
        assert len(lines) == 2, lines
        assert lines[0].startswith("stackprof: error: ") and "MTU" in lines[0]
        assert lines[1] == "rc=2"
