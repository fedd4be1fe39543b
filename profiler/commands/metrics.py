"""The ``--metrics`` endpoint of ``trace`` and ``attach``: started before any work (a
port that cannot be had is bad input), fed each refreshed run, closed at the end.

prometheus_client is imported only when ``--metrics`` is given: without it, attach
would load it (and numpy) before its probes are attached, for nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from profiler.errors import UsageError
from profiler.run import Run
from profiler.session import Update

if TYPE_CHECKING:
    from profiler.metrics import Endpoint

EVERY_ADDRESS = "0.0.0.0"  # no ADDR given (prometheus_client cannot resolve "")


@contextlib.contextmanager
def endpoint(
    listen: tuple[str, int] | None, labels: Mapping[str, str] = {}
) -> Iterator[Endpoint | None]:
    """An Endpoint on [ADDR:]PORT, or None without --metrics."""
    if listen is None:
        yield None
        return
    from profiler.metrics import Endpoint

    host, port = listen
    try:
        served = Endpoint(host or EVERY_ADDRESS, port, labels)
    except OSError as exc:
        raise UsageError(f"--metrics {host}:{port}: {exc.strerror or exc}") from None
    try:
        yield served
    finally:
        served.close()


def feeding(served: Endpoint | None, update: Update) -> Update:
    """The live view's update, also handing each refreshed run to the endpoint."""
    if served is None:
        return update

    def both(run: Run, status: dict[str, Any]) -> None:
        update(run, status)
        served.update(run)

    return both
