"""The errors the command line turns into an exit status, and one-line messages.

``UsageError`` (bad input) exits 2, ``SessionError`` (a session cannot run here)
exits 1; both carry one line for the user. Defined here, below every module that
raises them, so that raising one never needs the command line.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: one line on stderr, exit status 2."""


class SessionError(Exception):
    """A session cannot start; the message is one line for the user (exit status 1)."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: an OSError's strerror, else the first line of its text."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
