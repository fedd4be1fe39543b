"""Adaptive batching: the seed paper's conclusion ("the optimal values ... can be achieved by
dynamically adjusting the batching parameters based on a statistical sampling of the
client input rate") as two tuners the servers consult.

Sampling (:class:`ArrivalSampler`): every ``WINDOW_S`` the server's requests per second
and the distinct clients (source address and port) that sent them.

TPACKET_V3 (:class:`FpbTuner`, ``--frames-per-block auto``): a block must fill before its
timeout or every request in it waits for the timeout (Table 1's collapse), and it fills
only if more requests than it holds arrive while the server works on the previous one: the
paper found the best near half the clients. So the tuner goes straight to half the
distinct clients sampled (bigger blocks, fewer wake-ups per request; a comparison of rates
between windows cannot choose here, as this shared VM's windows differ by more than the
settings do), and no further than a block the sampled rate fills within one timeout. What
it watches is what the ring says of the choice: when over a quarter of a window's frames came
in blocks the timeout retired, the clients in flight (fewer than the clients when they
think or are slow to send again) cannot fill the blocks, and frames per block halve and
stay below that while the clients seen stay the same. Each change re-creates the ring (its
geometry cannot change in place): :meth:`RingRetuner.swap` opens the new ring first, so
both see every frame, reads the old one until its open block has surely retired (two block
timeouts), closes it, and skips in the new ring the requests already answered (by client
id and sequence number): none lost, none answered twice.

recvmmsg (:class:`BatchTuner`, ``--batch auto``): the vector length follows what the
socket holds: doubled while more than a tenth of the calls come back full, halved while
the largest batch of a window uses under a quarter of it (1 .. ``MAX_AUTO_BATCH``). It
starts at ``FIRST_BATCH``, not small: the server reads with MSG_DONTWAIT, so a vector
longer than the queue goes unused at no cost, while one too short takes extra calls until
the doubling catches up (from 8, the climb took 4 of a 6 s run at 32 clients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from servers import tpacket
from servers.payload import parse_header

WINDOW_S = 0.5
HYSTERESIS = 0.25  # changes in the clients seen, or to fpb, smaller than this are noise
FIRST_DECISION_S = 1.0  # in the first window closed-loop clients are still starting
STARVED = 0.25  # a quarter of a window's frames waited for the block timeout
MAX_AUTO_BATCH = 256
FIRST_FPB = 8
FIRST_BATCH = 64  # the mmsg server's default fixed batch


@dataclass
class ArrivalSampler:
    """Requests and distinct clients over a window."""

    window_s: float = WINDOW_S
    started: float = 0.0
    count: int = 0
    sources: set[Any] = field(default_factory=set)

    def add(self, source: Any) -> None:
        self.count += 1
        self.sources.add(source)

    def due(self, now: float) -> bool:
        if not self.started:
            self.started = now
        return now - self.started >= self.window_s

    def take(self, now: float) -> tuple[float, int]:
        """(requests per second, distinct clients) of the window now ending; a new one starts."""
        seconds = max(1e-6, now - self.started)
        sample = (self.count / seconds, len(self.sources))
        self.started, self.count, self.sources = now, 0, set()
        return sample


def fpb_ceiling(clients: int, limit: int = 4096) -> int:
    """Frames per block can never usefully pass half the clients: a block the clients in
    flight cannot fill while the server works on the previous one waits for the timeout."""
    return max(1, min(clients // 2, limit))


@dataclass(frozen=True)
class RingWindow:
    """What the server sampled over one window: its input and how the ring delivered it."""

    rate: float  # requests per second
    clients: int  # distinct sources
    frames: int = 0
    frames_timed_out: int = 0  # of those, frames in blocks the timeout retired

    @property
    def starved(self) -> bool:
        """Did most requests wait for the timeout (blocks the clients could not fill)?"""
        return self.frames > 0 and self.frames_timed_out > STARVED * self.frames


@dataclass
class FpbTuner:
    """When and to what a V3 ring's frames per block should change.

    At the end of each window: halve if the window starved (and remember that size as too
    big), else go to :meth:`goal` when it differs from the current size by more than
    ``HYSTERESIS`` (a window's client count wobbles). A change of more than that in the
    clients seen forgets what starved (the input changed)."""

    timeout_ms: float
    current: int = FIRST_FPB
    too_big: int | None = None  # the smallest fpb that starved with these clients
    clients_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def goal(self, window: RingWindow) -> int:
        """Half the clients, no more than the rate brings in one timeout, below too_big."""
        top = fpb_ceiling(window.clients)
        top = min(top, max(1, int(window.rate * self.timeout_ms / 1000)))
        if self.too_big is not None:
            top = min(top, max(1, self.too_big // 2))
        return top

    def propose(self, now: float, window: RingWindow) -> int | None:
        """The new frames per block, or None to keep the ring as it is."""
        if not window.clients or now < FIRST_DECISION_S:
            return None
        seen = self.clients_seen
        if seen and abs(window.clients - seen) > HYSTERESIS * seen:
            self.too_big = None
        self.clients_seen = window.clients
        if window.starved and self.current > 1:
            self.too_big = min(self.current, self.too_big or self.current)
            target = self.current // 2
        else:
            target = self.goal(window)
            if abs(target - self.current) <= HYSTERESIS * self.current:
                return None
        return self._change(now, window, target)

    def _change(self, now: float, window: RingWindow, target: int) -> int:
        self.history.append(
            {"at_s": round(now, 3), "rate": round(window.rate, 1), "clients": window.clients,
             "starved": window.starved, "fpb": target}
        )  # fmt: skip
        self.current = target
        return target


@dataclass
class BatchTuner:
    """A recvmmsg vector length that follows the batches the socket yields."""

    vlen: int = FIRST_BATCH
    calls: int = 0
    full: int = 0
    largest: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def observe(self, got: int) -> None:
        self.calls += 1
        self.full += got >= self.vlen
        self.largest = max(self.largest, got)

    def propose(self, now: float) -> int | None:
        """The new vector length at the end of a window, or None to keep it."""
        calls, full, largest = self.calls, self.full, self.largest
        self.calls = self.full = self.largest = 0
        if not calls:
            return None
        vlen = self.vlen
        if full > calls / 10 and vlen < MAX_AUTO_BATCH:
            vlen = min(MAX_AUTO_BATCH, vlen * 2)
        elif largest < vlen / 4 and vlen > 1:
            vlen = max(1, vlen // 2)
        if vlen == self.vlen:
            return None
        self.history.append({"at_s": round(now, 3), "largest": largest, "batch": vlen})
        self.vlen = vlen
        return vlen


class RingHolder(Protocol):
    """What the retuner needs of the packet server: its ring, and to handle a frame."""

    ring: tpacket.PacketRing

    def handle(self, frame: tpacket.RxFrame, now: float) -> None: ...


@dataclass
class RingRetuner:
    """``--frames-per-block auto`` for a packet server: sample, decide, swap rings."""

    make_config: Callable[[int], tpacket.RingConfig]
    open_ring: Callable[[tpacket.RingConfig], tpacket.PacketRing]
    timeout_ms: float
    sampler: ArrivalSampler = field(default_factory=ArrivalSampler)
    tuner: FpbTuner | None = None
    answered: set[tuple[int, int]] | None = None  # recorded while two rings overlap
    skip: set[tuple[int, int]] = field(default_factory=set)
    skip_until: float = 0.0
    retired: list[tpacket.PacketRing] = field(default_factory=list)
    duplicates: int = 0
    started: float = 0.0
    marked_ring: tpacket.PacketRing | None = None  # the ring mark counts in
    mark: tuple[int, int] = (0, 0)  # its (frames, frames_timed_out) when the window began

    def __post_init__(self) -> None:
        self.tuner = self.tuner or FpbTuner(self.timeout_ms)

    def note(self, source: Any, payload: bytes | memoryview, now: float) -> bool:
        """Count a request; False if it was already answered from the ring before."""
        self.sampler.add(source)
        key = parse_header(payload)
        if key is None:
            return True
        if self.skip and now < self.skip_until and key in self.skip:
            self.skip.discard(key)
            self.duplicates += 1
            return False
        if self.answered is not None:
            self.answered.add(key)
        return True

    def window(self, ring: tpacket.PacketRing, now: float) -> RingWindow:
        """The window now ending: the sampler's rate and clients, the ring's frames since."""
        rate, clients = self.sampler.take(now)
        counters = ring.counters
        frames, timed_out = counters.frames, counters.frames_timed_out
        if ring is not self.marked_ring:
            self.marked_ring, self.mark = ring, (0, 0)
        window = RingWindow(rate, clients, frames - self.mark[0], timed_out - self.mark[1])
        self.mark = (frames, timed_out)
        return window

    def maybe_retune(self, server: RingHolder, now: float) -> bool:
        """At the end of a sampling window, swap to a ring of the frames per block the input
        now calls for; True if the ring changed (the caller polls the new one)."""
        self.started = self.started or now
        if not self.sampler.due(now):
            return False
        window = self.window(server.ring, now)
        assert self.tuner is not None
        fpb = self.tuner.propose(now - self.started, window)
        if fpb is None:
            return False
        self.swap(server, fpb)
        return True

    def swap(self, server: RingHolder, fpb: int) -> None:
        """New ring first (both rings get every frame from then on), the old one read until
        its open block has retired, then closed; its answers skipped in the new ring."""
        old, new = server.ring, self.open_ring(self.make_config(fpb))
        self.answered = set()
        # the old ring's open block retires within one timeout (two on kernels whose timer
        # spares a block opened since its last tick)
        overlap_end = time.monotonic() + (2 * self.timeout_ms + 2) / 1000
        try:
            while time.monotonic() < overlap_end:
                old.wait(1)
                now = time.monotonic()
                for frame in old.receive(max_frames=64):  # the overlap stays bounded
                    server.handle(frame, now)
        finally:
            self.skip, self.answered = self.answered, None
            self.skip_until = time.monotonic() + 1.0
            old.statistics()
            self.retired.append(old)
            old.close()
            server.ring = new

    def report(self, ring: tpacket.PacketRing) -> dict[str, Any]:
        """The rings' counters summed over every ring the server had, and the changes."""
        rings = [*self.retired, ring]
        totals: dict[str, int] = {}
        for r in rings:
            for key, value in r.counters.as_dict().items():
                totals[key] = (
                    max(totals.get(key, 0), value)
                    if key.startswith("max")
                    else (totals.get(key, 0) + value)
                )
        assert self.tuner is not None
        return {
            "ring": totals,
            "kernel_packets": sum(r.kernel_packets for r in self.retired),
            "kernel_drops": sum(r.kernel_drops for r in self.retired),
            "adapt": {"changes": self.tuner.history, "duplicates_skipped": self.duplicates},
        }
