from __future__ import annotations

import m3u8
import pytest

from sidecar.manifests.hls import Variant, render_media, render_multivariant
from sidecar.model import Part, SegmentRecord
from sidecar.timeline import build_media_playlist, visible

S = 90_000
D = 6 * S


def rec(n: int, epoch: int = 0, dur: int = D, start: int | None = None,
        at: int | None = None) -> SegmentRecord:
    return SegmentRecord("live/x", n, epoch, n * D if start is None else start, dur,
                         (Part("ts", f"h{n}", 1000),), (n + 1) * D + S // 2 if at is None else at,
                         "a")


def firsts(records: list[SegmentRecord]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        out.setdefault(r.epoch, r.number)
    return out


def test_visible_uses_first_writer_time_plus_delay() -> None:
    records = [rec(1, at=100), rec(2, at=200)]
    assert [r.number for r in visible(records, 150, 50)] == [1]
    assert [r.number for r in visible(records, 250, 50)] == [1, 2]
    assert visible(records, 149, 50) == []


def test_sliding_window_and_media_sequence() -> None:
    records = [rec(n) for n in range(100, 120)]
    pl = build_media_playlist(records, firsts(records), window=5, duration=D)
    assert pl is not None
    assert pl.media_sequence == 115
    assert [e.number for e in pl.entries] == [115, 116, 117, 118, 119]
    assert pl.discontinuity_sequence == 0
    assert pl.target_duration == 6


def test_holes_become_gap_entries_numbers_stay_contiguous() -> None:
    records = [rec(n) for n in (10, 11, 14, 15)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D)
    assert pl is not None
    assert [(e.number, e.gap) for e in pl.entries] == [
        (10, False), (11, False), (12, True), (13, True), (14, False), (15, False)]
    text = render_media(pl)
    parsed = m3u8.loads(text)
    assert [s.uri for s in parsed.segments] == [f"{n}.ts" for n in range(10, 16)]
    assert text.count("#EXT-X-GAP") == 2


@pytest.mark.parametrize(
    ("window", "dsn", "first_has_tag", "tags"),
    [
        (12, 0, False, 2),  # both epoch changes visible
        (7, 0, False, 2),   # window starts on the gap that ends epoch 0
        (6, 0, True, 2),    # window starts exactly at epoch 1's first segment
        (5, 1, False, 1),   # window starts inside epoch 1
        (3, 1, True, 1),    # window starts exactly at epoch 2's first segment
        (2, 2, False, 0),
    ],
)
def test_discontinuity_sequence_counts_epoch_changes(
    window: int, dsn: int, first_has_tag: bool, tags: int
) -> None:
    # epoch 0: 10-13, gap 14, epoch 1: 15-17, epoch 2: 18-20
    records = ([rec(n, 0) for n in range(10, 14)] + [rec(n, 1) for n in range(15, 18)]
               + [rec(n, 2) for n in range(18, 21)])
    pl = build_media_playlist(records, firsts(records), window=window, duration=D)
    assert pl is not None
    assert pl.entries[0].discontinuity is first_has_tag
    assert pl.discontinuity_sequence == dsn
    # Whatever the window, every segment keeps its discontinuity number (RFC 8216 6.2.2).
    disc = pl.discontinuity_sequence
    numbers = {}
    for e in pl.entries:
        disc += 1 if e.discontinuity else 0
        numbers[e.number] = disc
    expected = {n: (0 if n < 15 else 1 if n < 18 else 2) for n in range(10, 21)}
    assert numbers == {n: expected[n] for n in numbers}
    text = render_media(pl)
    assert text.count("#EXT-X-DISCONTINUITY\n") == tags
    parsed = m3u8.loads(text)
    assert parsed.discontinuity_sequence == dsn


def test_gap_after_epoch_end_belongs_to_old_epoch() -> None:
    records = [rec(n, 0) for n in (1, 2)] + [rec(n, 1) for n in (4, 5)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D)
    assert pl is not None
    assert [(e.number, e.gap, e.discontinuity) for e in pl.entries] == [
        (1, False, False), (2, False, False), (3, True, False), (4, False, True),
        (5, False, False)]


def test_target_duration_covers_long_segments() -> None:
    records = [rec(1), rec(2, dur=8 * S + S // 3), rec(3, dur=4 * S)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D)
    assert pl is not None and pl.target_duration == 8
    records = [rec(1), rec(2, dur=8 * S + S // 2)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D)
    assert pl is not None and pl.target_duration == 9


def test_rendered_media_playlist_parses_with_m3u8() -> None:
    records = [rec(n, start=n * D + 37, dur=D - 1) for n in range(283_000_000, 283_000_004)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D)
    assert pl is not None
    text = render_media(pl)
    parsed = m3u8.loads(text)
    assert parsed.version == 3
    assert parsed.target_duration == 6
    assert parsed.media_sequence == 283_000_000
    assert [s.duration for s in parsed.segments] == [5.99999] * 4
    assert all(s.program_date_time is not None for s in parsed.segments)
    first = parsed.segments[0].program_date_time
    assert first is not None and first.year == 2023
    assert "#EXT-X-ENDLIST" not in text


def test_ended_playlist_is_vod() -> None:
    records = [rec(1), rec(2)]
    pl = build_media_playlist(records, firsts(records), window=10, duration=D, ended=True)
    assert pl is not None
    parsed = m3u8.loads(render_media(pl))
    assert parsed.is_endlist and parsed.playlist_type == "vod"


def test_empty_timeline_has_no_playlist() -> None:
    assert build_media_playlist([], {}, window=10, duration=D) is None


def test_multivariant() -> None:
    text = render_multivariant([Variant("src/media.m3u8", 1_234_567, "avc1.64001F,mp4a.40.2",
                                        "1280x720")])
    parsed = m3u8.loads(text)
    assert parsed.is_variant
    p = parsed.playlists[0]
    assert p.uri == "src/media.m3u8"
    assert p.stream_info.bandwidth == 1_234_567
    assert p.stream_info.codecs == "avc1.64001F,mp4a.40.2"
    assert p.stream_info.resolution == (1280, 720)
