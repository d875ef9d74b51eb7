"""Input timestamps to grid time: wall clocks, per-connection unwrapping, epoch decisions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from sidecar.grid import TICKS_PER_SECOND, Unwrapper, rescale
from sidecar.model import Epoch, RawPacket, TrackDesc


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock time in 90 kHz ticks since the Unix epoch."""
        ...


class SystemClock:
    """The host clock, optionally skewed (tests and the drift benchmark inject skew)."""

    def __init__(self, offset_ticks: int = 0) -> None:
        self.offset = offset_ticks

    def now(self) -> int:
        return time.time_ns() * 9 // 100_000 + self.offset


class ManualClock:
    """A clock that only moves when told to: deterministic threaded and async tests."""

    def __init__(self, start: int = 0) -> None:
        self.t = start

    def now(self) -> int:
        return self.t

    def advance(self, ticks: int) -> None:
        self.t += ticks


class SyncedClock:
    """The host clock corrected to a shared reference (Redis ``TIME``): cluster time.

    Playlists list a segment a fixed delay after its first publication, judged by each
    node's clock; with one reference clock for all nodes, host clock skew no longer makes
    two nodes disagree at the same instant.
    """

    max_rtt = 9_000  # 100 ms: a slower round trip says little about the offset

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset = 0
        self.synced = False

    def now(self) -> int:
        return self.base.now() + self.offset

    def observe(self, reference: int, sent: int, received: int) -> int | None:
        """Take a reference reading made between ``sent`` and ``received`` (base clock).

        Returns the change of offset in ticks, or ``None`` if the sample was rejected.
        """
        if received - sent > self.max_rtt:
            return None
        offset = reference - (sent + received) // 2
        change = offset - self.offset
        self.offset = offset
        self.synced = True
        return change


@dataclass(frozen=True, slots=True)
class Placed:
    """A packet's input timestamps in ticks (unwrapped), before anchoring."""

    pts: int
    dts: int
    jump: bool


class InputTimeline:
    """Unwraps one connection's timestamps and flags jumps that start a new epoch.

    A jump is a step back by more than ``back_tolerance`` or forward by more than
    ``jump_threshold`` against the newest DTS seen on any track (tracks interleave, so
    small steps back between audio and video are normal).
    """

    def __init__(
        self,
        wrap_bits: int | None,
        *,
        jump_threshold: int = 10 * TICKS_PER_SECOND,
        back_tolerance: int = 3 * TICKS_PER_SECOND,
    ) -> None:
        self.wrap_bits = wrap_bits
        self.jump_threshold = jump_threshold
        self.back_tolerance = back_tolerance
        self._unwrap: dict[int, Unwrapper] = {}
        self._newest: int | None = None

    def place(self, raw: RawPacket) -> Placed:
        unwrap = self._unwrap.get(raw.track)
        if unwrap is None:
            bits = self.wrap_bits
            unwrap = self._unwrap[raw.track] = Unwrapper(bits)
        ref = raw.dts if raw.dts is not None else raw.pts
        assert ref is not None
        dts_in = unwrap(ref)
        offset = 0 if raw.pts is None else raw.pts - ref
        if unwrap.period and abs(offset) > unwrap.period // 2:
            # PTS and DTS straddle a wrap: take the short way round.
            offset -= unwrap.period if offset > 0 else -unwrap.period
        pts_in = dts_in + offset
        dts = rescale(dts_in, raw.time_base)
        pts = rescale(pts_in, raw.time_base)
        jump = self._newest is not None and (
            dts < self._newest - self.back_tolerance or dts > self._newest + self.jump_threshold
        )
        if jump:
            # Every track restarts its reference: the new run is judged on its own.
            self._unwrap = {raw.track: unwrap}
            self._newest = dts
        else:
            self._newest = dts if self._newest is None else max(self._newest, dts)
        return Placed(pts, dts, jump)


def matches(epoch: Epoch, t: int, arrival: int, tolerance: int) -> bool:
    """Does input time ``t`` arriving at ``arrival`` continue ``epoch``?"""
    return abs(arrival - epoch.expected_arrival(t)) <= tolerance


def propose_epoch(
    stream: str,
    latest: Epoch | None,
    t0: int,
    arrival: int,
    *,
    duration: int,
    last_number: int | None,
    node: str,
    codecs: str = "",
    resolution: str = "",
    tracks: tuple[TrackDesc, ...] = (),
) -> Epoch:
    """A new epoch whose first packet lands exactly on a slot boundary.

    The boundary is the slot that holds ``arrival``, moved later if needed so that the new
    epoch's first segment number is above every number already used: names are never
    reused, even when the encoder comes back within the same slot.
    """
    start = arrival // duration * duration
    if last_number is not None:
        start = max(start, (last_number + 1) * duration)
    index = 0 if latest is None else latest.index + 1
    return Epoch(
        stream=stream,
        index=index,
        anchor=start - t0,
        t0=t0,
        lead=start - arrival,
        created_at=arrival,
        node=node,
        codecs=codecs,
        resolution=resolution,
        tracks=tracks,
    )
