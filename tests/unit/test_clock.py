from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from sidecar.clock import InputTimeline, ManualClock, SystemClock, matches, propose_epoch
from sidecar.model import Epoch, RawPacket

S = 90_000
D = 6 * S
MS = Fraction(1, 1000)
TS = Fraction(1, 90_000)


def raw(t: int, tb: Fraction = MS, track: int = 0, pts: int | None = None) -> RawPacket:
    return RawPacket(track, t if pts is None else pts, t, 0, tb, False, b"", 0)


@pytest.mark.parametrize(
    ("times", "jumps"),
    [
        ([0, 40, 80, 120], [False] * 4),
        # Encoder restart: back to 0 after 60 s.
        ([60_000, 60_040, 0, 40], [False, False, True, False]),
        # Forward jump beyond the threshold (10 s).
        ([1_000, 1_040, 12_000, 12_040], [False, False, True, False]),
        # Small steps back between interleaved tracks are not jumps.
        ([1_000, 990, 1_040, 800], [False, False, False, False]),
        # Forward gap just under the threshold is not a jump.
        ([1_000, 10_999], [False, False]),
    ],
)
def test_jumps(times: list[int], jumps: list[bool]) -> None:
    tl = InputTimeline(32)
    assert [tl.place(raw(t)).jump for t in times] == jumps


def test_rtmp_wrap_is_not_a_jump_and_stays_continuous() -> None:
    tl = InputTimeline(32)
    placed = [tl.place(raw(t)) for t in [(1 << 32) - 80, (1 << 32) - 40, 0, 40]]
    assert [p.jump for p in placed] == [False] * 4
    dts = [p.dts for p in placed]
    assert [b - a for a, b in itertools.pairwise(dts)] == [40 * 90] * 3


def test_ts_wrap_with_b_frames() -> None:
    tl = InputTimeline(33)
    wrap = 1 << 33
    # DTS just before the wrap, PTS already wrapped.
    p = tl.place(raw(wrap - 3600, TS, pts=3600))
    assert p.pts - p.dts == 7200
    q = tl.place(raw(0, TS, pts=7200))
    assert q.dts == wrap and q.pts == wrap + 7200 and not q.jump


def test_audio_track_after_restart_is_not_a_second_jump() -> None:
    tl = InputTimeline(32)
    tl.place(raw(60_000, track=0))
    tl.place(raw(60_010, track=1))
    assert tl.place(raw(0, track=0)).jump
    assert not tl.place(raw(5, track=1)).jump


def epoch(anchor: int, t0: int, lead: int = 0, index: int = 0) -> Epoch:
    return Epoch("s", index, anchor, t0, lead, anchor + t0 - lead, "a")


@pytest.mark.parametrize(
    ("t", "arrival", "expected"),
    [
        (10 * S, 1_000 * D + 10 * S, True),           # exactly on time
        (10 * S, 1_000 * D + 10 * S + 150 * 90, True),  # 150 ms late (jitter + skew)
        (10 * S, 1_000 * D + 12 * S, True),            # 2 s late: the tolerance
        (10 * S, 1_000 * D + 12 * S + 1, False),
        (0, 1_000 * D + 60 * S, False),                # timestamps back to 0 a minute later
    ],
)
def test_matches(t: int, arrival: int, expected: bool) -> None:
    e = epoch(anchor=1_000 * D, t0=0)
    assert matches(e, t, arrival, 2 * S) is expected


@pytest.mark.parametrize(
    ("arrival", "last", "first_slot"),
    [
        (1_000 * D + 100, None, 1_000),       # aligned down to the slot holding arrival
        (1_000 * D + 100, 999, 1_000),
        (1_000 * D + 100, 1_000, 1_001),      # encoder back within the same slot: move on
        (1_000 * D + 100, 1_005, 1_006),      # never reuse a number
    ],
)
def test_propose_epoch_starts_on_a_fresh_slot(arrival: int, last: int | None,
                                              first_slot: int) -> None:
    t0 = 123_456
    e = propose_epoch("s", None, t0, arrival, duration=D, last_number=last, node="a")
    assert e.grid(t0) == first_slot * D
    assert e.lead == first_slot * D - arrival
    assert e.expected_arrival(t0) == arrival
    assert e.index == 0


def test_propose_epoch_indexes_after_latest() -> None:
    latest = epoch(anchor=0, t0=0, index=4)
    assert propose_epoch("s", latest, 0, D, duration=D, last_number=None, node="b").index == 5


def test_clocks() -> None:
    c = ManualClock(5)
    c.advance(10)
    assert c.now() == 15
    a, b = SystemClock(), SystemClock(offset_ticks=9_000)
    assert 8_000 < b.now() - a.now() < 10_000 + 9_000


@pytest.mark.parametrize(
    ("reference", "sent", "received", "offset"),
    [
        (1_000, 0, 0, 1_000),
        (10_000, 9_000, 9_100, 950),      # the reading was taken mid round trip
        (5_000, 6_000, 6_000, -1_000),    # this host runs ahead
        (10_000, 0, 9_001, None),         # round trip over 100 ms: rejected
    ],
)
def test_synced_clock_observe(reference: int, sent: int, received: int,
                              offset: int | None) -> None:
    from sidecar.clock import SyncedClock

    c = SyncedClock(ManualClock(100))
    change = c.observe(reference, sent, received)
    if offset is None:
        assert change is None and c.offset == 0 and not c.synced
    else:
        assert change == offset and c.offset == offset and c.synced
        assert c.now() == 100 + offset
