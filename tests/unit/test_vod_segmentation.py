"""The VOD segmentation rule over synthetic packet tables (ticks, D = 2 s = 50 frames)."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.vod.segmentation import plan

F = 3_600  # one 25 fps frame
D = 50 * F  # 2 s
A = 1_920  # one AAC frame at 48 kHz
VIDEO, AUDIO = 0, 1


def video(frames: int, keys: set[int], *, bframes: int = 0, first: int = 0
          ) -> list[tuple[int, int, int, bool]]:
    """(track, pts, duration, keyframe) in decode order, closed GOPs: each anchor (I or P)
    comes before the B-frames it follows in display order, never across a keyframe."""
    out: list[tuple[int, int, int, bool]] = []
    i = 0
    while i < frames:
        later = [k for k in keys if k > i]
        limit = min([frames, *later]) - 1
        anchor = i if i in keys else min(i + bframes, limit)
        group = [anchor, *range(i, anchor)]
        for f in group:
            out.append((VIDEO, (first + f) * F, F, f in keys))
        i = anchor + 1
    return out


def audio(count: int, first: int = 0) -> list[tuple[int, int, int, bool]]:
    return [(AUDIO, first + j * A, A, True) for j in range(count)]


def interleave(*tracks: list[tuple[int, int, int, bool]]) -> list[tuple[int, int, int, bool]]:
    """Demux order: by PTS with a stable sort, which keeps each track's decode order."""
    rows = [r for t in tracks for r in t]
    return sorted(rows, key=lambda r: r[1] if r[0] == AUDIO else r[1] - 2 * F)


def cut(rows: list[tuple[int, int, int, bool]], driver: int = VIDEO, d: int = D):
    track = np.array([r[0] for r in rows])
    pts = np.array([r[1] for r in rows])
    dur = np.array([r[2] for r in rows])
    key = np.array([r[3] for r in rows])
    return plan(track, pts, dur, key, driver=driver, segment_duration=d), track, pts, key


def every(step: int, frames: int, start: int = 0) -> set[int]:
    return set(range(start, frames, step))


@pytest.mark.parametrize(("name", "rows", "spans"), [
    ("GOP = D", video(150, every(50, 150)),
     [(0, 50), (50, 100), (100, 150)]),
    ("GOP = D/2", video(150, every(25, 150)),
     [(0, 50), (50, 100), (100, 150)]),
    ("GOP = 1.5 D: a slot without keyframe is merged into the segment before",
     video(250, every(75, 250)),
     [(0, 75), (75, 150), (150, 225), (225, 250)]),
    ("GOP = 2.5 D", video(300, every(125, 300)),
     [(0, 125), (125, 250), (250, 300)]),
    ("keyframe-less tail: one long last segment", video(260, every(50, 101)),
     [(0, 50), (50, 100), (100, 260)]),
    ("keyframes off the grid", video(160, {0, *every(50, 160, 12)}),
     [(0, 62), (62, 112), (112, 160)]),
    ("two keyframes in one slot: the first of the slot wins",
     video(150, {0, 25, 55, 70, 110}),
     [(0, 55), (55, 110), (110, 150)]),
    ("last segment shorter than D", video(126, every(25, 126)),
     [(0, 50), (50, 100), (100, 126)]),
    ("B-frames, closed GOPs", video(150, every(50, 150), bframes=2),
     [(0, 50), (50, 100), (100, 150)]),
    ("B-frames, GOP longer than D", video(200, every(60, 200), bframes=3),
     [(0, 60), (60, 120), (120, 180), (180, 200)]),
])
def test_video_spans(name: str, rows: list[tuple[int, int, int, bool]],
                     spans: list[tuple[int, int]]) -> None:
    p, _, pts, key = cut(rows)
    assert [(s.start // F, s.end // F) for s in p.spans] == spans, name
    assert [s.number for s in p.spans] == list(range(len(spans)))  # contiguous from 0
    for s in p.spans:
        rows_n = p.rows(s.number)
        # Every segment starts (in decode order) with a keyframe and holds exactly the
        # frames of its span (closed GOPs).
        assert key[rows_n[0]]
        assert sorted(pts[rows_n].tolist()) == list(range(s.start, s.end, F))
    assert p.dropped == 0


def test_every_boundary_is_the_first_keyframe_of_its_slot() -> None:
    rng = np.random.default_rng(7)
    keys = {0, *(int(k) for k in rng.choice(np.arange(1, 1000), 40, replace=False))}
    p, _, _, _ = cut(video(1000, keys, bframes=2))
    by_slot: dict[int, int] = {}
    for t in sorted(k * F for k in keys):
        by_slot.setdefault(t // D, t)
    assert [s.start for s in p.spans] == sorted(by_slot.values())


@pytest.mark.parametrize(("name", "rows", "spans", "counts"), [
    ("audio by its own PTS", interleave(video(100, every(50, 100)), audio(125)),
     [(0, 50 * F), (50 * F, 100 * F)], [94, 31]),
    ("audio before the first keyframe goes to segment 0",
     interleave(video(100, every(50, 100), first=2), audio(130, first=-5 * A)),
     [(2 * F, 52 * F), (52 * F, 102 * F)], [103, 27]),  # 5 of them before 2F
    ("audio after the last boundary goes to the last segment",
     interleave(video(60, every(50, 60)), audio(200)),
     [(0, 50 * F), (50 * F, 200 * A)], [94, 106]),
])
def test_audio_assignment(name: str, rows: list[tuple[int, int, int, bool]],
                          spans: list[tuple[int, int]], counts: list[int]) -> None:
    p, track, pts, _ = cut(rows)
    assert [(s.start, s.end) for s in p.spans] == spans, name
    audio_rows = np.flatnonzero(track == AUDIO)
    assert np.bincount(p.segment[audio_rows]).tolist() == counts
    inner = [s for s in p.spans][1:-1]
    for s in inner:
        own = pts[audio_rows][p.segment[audio_rows] == s.number]
        assert ((own >= s.start) & (own < s.end)).all()


def test_audio_only_cuts_on_the_first_frame_of_each_slot() -> None:
    p, _, _, _ = cut(audio(250), driver=AUDIO)
    # 180000 / 1920 = 93.75: slot 1 starts with frame 94, slot 2 with frame 188.
    assert [(s.start, s.end) for s in p.spans] == [(0, 94 * A), (94 * A, 188 * A),
                                                   (188 * A, 250 * A)]
    assert p.dropped == 0


def test_video_before_the_first_keyframe_is_not_served() -> None:
    rows = [(VIDEO, i * F, F, False) for i in range(3)] + video(100, every(50, 100), first=3)
    p, _, _, _ = cut(rows)
    assert p.dropped == 3
    assert p.spans[0].start == 3 * F
    assert (p.segment[:3] == -1).all()


def test_driver_without_keyframes_is_refused() -> None:
    with pytest.raises(ValueError, match="no keyframe"):
        cut([(VIDEO, i * F, F, False) for i in range(10)])


def test_plan_is_deterministic_and_read_only() -> None:
    rows = interleave(video(300, every(40, 300), bframes=2), audio(400))
    a, _, _, _ = cut(rows)
    b, _, _, _ = cut(list(rows))
    assert a.spans == b.spans
    assert (a.segment == b.segment).all()
    with pytest.raises(ValueError):
        a.segment[0] = 5
