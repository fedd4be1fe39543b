"""The phases of a run, a test hook that stops stackprof in one of them, and interrupts
held off while a file is being written.

Phases: ``topology`` (the private namespaces being made), ``attach`` (the programs
attached, no load yet), ``load`` (the workload running, traced), ``save`` (a run's
file written, not yet in place). ``STACKPROF_PAUSE_AT=PHASE`` is a test hook: when
stackprof first reaches that phase it says so on stderr and stops itself (SIGSTOP), so a
test can kill it right there and look at what it leaves behind
(``tests/test_kill_phases.py``). Unset, it costs one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

PHASES = ("topology", "attach", "load", "save")
PAUSE_ENV = "STACKPROF_PAUSE_AT"
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_during: list[str] = []
_paused: set[str] = set()


def reached(phase: str) -> None:
    """The test hook: stop here if STACKPROF_PAUSE_AT names this phase (the first time)."""
    if os.environ.get(PAUSE_ENV) == phase and phase not in _paused:
        _paused.add(phase)
        print(f"stackprof: paused at {phase} ({PAUSE_ENV})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)


@contextlib.contextmanager
def during(phase: str) -> Iterator[None]:
    """Mark a phase that lower layers reach without knowing it (a save's file write)."""
    _during.append(phase)
    try:
        yield
    finally:
        _during.pop()


def checkpoint() -> None:
    """The point inside the innermost marked phase where the test hook stops."""
    if _during:
        reached(_during[-1])


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends, then act on the first one
    as it would have been acted on: a file being written is finished, never dropped
    half-way (a run interrupted while saving is still saved). Only the main thread can
    set handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in INTERRUPTS}

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)

    for signum in INTERRUPTS:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if held:
            _deliver(held[0], previous[held[0]])


def _deliver(signum: int, handler: Any) -> None:
    """What the handler in place before the block would have done with signum."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)
