"""The stackprof command run as a user runs it, in a process of its own from the
checkout, for the tests that judge its exit status and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stackprof(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m profiler ARGS`` in the checkout; its status and output (text)."""
    return subprocess.run(
        [sys.executable, "-m", "profiler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
