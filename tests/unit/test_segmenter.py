from __future__ import annotations

from collections.abc import Iterable

import pytest

from sidecar.model import Cut, GridPacket
from sidecar.segmenter import Segmenter

S = 90_000
D = 6 * S
FRAME = 3_600  # 25 fps
AUDIO = 1_920  # 1024 samples at 48 kHz
BASE = 1_000 * D  # slot 1000 starts here


def video(pts: int, kf: bool = False, dts: int | None = None) -> GridPacket:
    return GridPacket(0, "video", pts, pts if dts is None else dts, FRAME, kf, b"v%d" % pts)


def audio(pts: int) -> GridPacket:
    return GridPacket(1, "audio", pts, pts, AUDIO, True, b"a%d" % pts)


def av_stream(start: int, seconds: float, kf_every: float = 2.0, offset: int = 0,
              skip: tuple[int, int] | None = None) -> list[GridPacket]:
    """Interleaved 25 fps video (keyframe every ``kf_every`` s) and AAC-like audio, in
    DTS order; ``skip`` drops every packet in [a, b)."""
    kf_frames = round(kf_every * 25)
    out = [video(start + offset + i * FRAME, kf=i % kf_frames == 0)
           for i in range(int(seconds * 25))]
    out += [audio(start + offset + j * AUDIO) for j in range(int(seconds * S) // AUDIO)]
    out.sort(key=lambda p: (p.dts, p.track))
    if skip:
        out = [p for p in out if not skip[0] <= p.pts < skip[1]]
    return out


def run(seg: Segmenter, packets: Iterable[GridPacket], finish: bool = True) -> list[Cut]:
    cuts: list[Cut] = []
    for p in packets:
        cuts += seg.push(p)
    if finish:
        cuts += seg.finish()
    return cuts


def spans(cuts: list[Cut]) -> list[tuple[int, int, int]]:
    return [(c.number, c.start - BASE, c.end - BASE) for c in cuts]


def test_keyframes_on_the_grid_give_whole_slots() -> None:
    cuts = run(Segmenter(D, publish_from=BASE), av_stream(BASE, 24.0))
    assert spans(cuts) == [(1000, 0, D), (1001, D, 2 * D), (1002, 2 * D, 3 * D),
                           (1003, 3 * D, 4 * D)]
    # Every audio packet lands in the segment that holds its PTS; nothing is lost.
    total = sum(len(c.packets) for c in cuts)
    assert total == len(av_stream(BASE, 24.0))
    for c in cuts:
        assert all(c.start <= p.pts < c.end for p in c.packets if p.kind == "audio")
        assert c.packets[0].kind == "video" and c.packets[0].keyframe


@pytest.mark.parametrize(
    ("offset", "expected_starts"),
    [
        # Keyframes 0.5 s after each slot boundary: segments start on those keyframes.
        (S // 2, [S // 2, D + S // 2, 2 * D + S // 2]),
        # Keyframes every 2 s starting 1 s before the slot: first KF >= boundary is +1 s.
        (-S, [S, D + S, 2 * D + S]),
    ],
)
def test_segment_starts_at_first_keyframe_at_or_after_boundary(
    offset: int, expected_starts: list[int]
) -> None:
    cuts = run(Segmenter(D, publish_from=BASE), av_stream(BASE, 20.0, offset=offset))
    assert [c.start - BASE for c in cuts][:3] == expected_starts
    assert [c.number for c in cuts][:3] == [1000, 1001, 1002]


def test_late_joiner_skips_partial_slot() -> None:
    packets = av_stream(BASE, 24.0)
    join = BASE + 3 * S + 700 * 90  # 3.7 s into slot 1000
    late = [p for p in packets if p.dts >= join]
    full = run(Segmenter(D, publish_from=BASE), packets)
    cuts = run(Segmenter(D, publish_from=join + S), late)
    assert cuts[0].number == 1001
    # From its first whole slot on, the late joiner cuts exactly what the early node cut.
    early = {c.number: c for c in full}
    for c in cuts[:-1]:
        assert c == early[c.number]


def test_keyframe_interval_not_dividing_duration() -> None:
    # Keyframes every 4 s, D = 6 s: slots get segments of 8 s and 4 s alternately.
    cuts = run(Segmenter(D, publish_from=BASE), av_stream(BASE, 26.0, kf_every=4.0))
    assert spans(cuts)[:3] == [(1000, 0, 8 * S), (1001, 8 * S, 12 * S), (1002, 12 * S, 20 * S)]


def test_slot_without_keyframe_gets_exactly_one_soft_segment() -> None:
    # Keyframes every 8 s: slot 1003 [18 s, 24 s) has none.
    seg = Segmenter(D, publish_from=BASE)
    cuts = run(seg, av_stream(BASE, 34.0, kf_every=8.0))
    numbers = [c.number for c in cuts]
    assert numbers == list(range(1000, 1000 + len(numbers)))
    soft = next(c for c in cuts if c.number == 1003)
    assert soft.start == BASE + 18 * S
    assert not soft.packets[0].keyframe
    assert seg.stats.soft_boundaries >= 1
    assert sum(len(c.packets) for c in cuts) == len(av_stream(BASE, 34.0, kf_every=8.0))


def test_slot_without_media_is_a_hole() -> None:
    # Nothing at all between 12 s and 26 s: slots 1002 and 1003 stay empty.
    packets = av_stream(BASE, 36.0, skip=(BASE + 12 * S, BASE + 26 * S))
    cuts = run(Segmenter(D, publish_from=BASE), packets)
    assert [c.number for c in cuts] == [1000, 1001, 1004, 1005]
    assert cuts[1].end == BASE + 26 * S  # 1001 runs until the next keyframe


def test_audio_before_video_is_dropped_until_first_keyframe() -> None:
    early_audio = [audio(BASE - S + j * AUDIO) for j in range(40)]
    seg = Segmenter(D, publish_from=BASE)
    cuts = run(seg, early_audio + av_stream(BASE + S // 2, 13.0))
    first = cuts[0]
    assert first.start == BASE + S // 2
    assert min(p.pts for p in first.packets if p.kind == "audio") >= first.start
    assert seg.stats.dropped_before_start > 0


def test_audio_that_arrives_before_the_keyframe_packet_is_kept() -> None:
    # Audio leads video by 300 ms in the interleave: packets with PTS >= the keyframe's
    # PTS that arrive before it must still land in the first segment.
    v = [video(BASE + i * FRAME, kf=i % 50 == 0) for i in range(200)]
    a = [audio(BASE + j * AUDIO) for j in range(8 * S // AUDIO)]
    lead = 300 * 90
    packets = sorted(v + a, key=lambda p: p.dts - (lead if p.kind == "audio" else 0))
    cuts = run(Segmenter(D, publish_from=BASE), packets)
    first_audio = min(p.pts for p in cuts[0].packets if p.kind == "audio")
    assert first_audio == BASE


def test_b_frames_cut_on_keyframe_pts_and_keep_decode_order() -> None:
    # IBBP-like: PTS = DTS + 2 frames for the keyframe, reordered B-frames.
    packets: list[GridPacket] = []
    for i in range(25 * 14):
        dts = BASE - 2 * FRAME + i * FRAME
        kind = i % 3
        pts = dts + 2 * FRAME if kind == 0 else dts - FRAME if kind == 1 else dts
        packets.append(video(pts, kf=(i % 48 == 0), dts=dts))
    cuts = run(Segmenter(D, publish_from=BASE - 2 * FRAME), packets)
    for c in cuts:
        assert c.packets[0].keyframe
        dts = [p.dts for p in c.packets]
        assert dts == sorted(dts)
        # Closed-GOP boundary: the keyframe's PTS is the segment start.
        assert c.start == c.packets[0].pts


def test_segment_waits_for_audio_to_catch_up() -> None:
    seg = Segmenter(D, publish_from=BASE, others=True, max_interleave=10 * S)
    v = [video(BASE + i * FRAME, kf=i % 50 == 0) for i in range(8 * 25)]
    for p in v:
        assert seg.push(p) == []  # the audio track has not caught up with 6 s yet
    assert seg.push(audio(BASE)) == []
    cuts = seg.push(audio(BASE + D))
    assert [c.number for c in cuts] == [1000]


def test_video_only_segments_do_not_wait() -> None:
    seg = Segmenter(D, publish_from=BASE)
    out: list[Cut] = []
    for i in range(7 * 25):
        out += seg.push(video(BASE + i * FRAME, kf=i % 50 == 0))
    assert [c.number for c in out] == [1000]


def test_driver_far_ahead_of_stalled_audio_closes_segment() -> None:
    seg = Segmenter(D, publish_from=BASE, others=True, max_interleave=2 * S)
    seg.push(audio(BASE))
    out: list[Cut] = []
    for i in range(9 * 25):
        out += seg.push(video(BASE + i * FRAME, kf=i % 50 == 0))
    assert [c.number for c in out] == [1000]  # released at 6 s + 2 s of video


def test_audio_only_stream_uses_audio_as_driver() -> None:
    packets = [audio(BASE + j * AUDIO) for j in range(20 * S // AUDIO)]
    cuts = run(Segmenter(D, publish_from=BASE, driver="audio"), packets)
    assert [c.number for c in cuts] == [1000, 1001, 1002, 1003]
    assert cuts[0].start == BASE


def test_finish_closes_last_segment_at_end_of_media() -> None:
    cuts = run(Segmenter(D, publish_from=BASE), av_stream(BASE, 9.0))
    assert spans(cuts)[-1][0] == 1001
    assert cuts[-1].end == max(p.end for p in av_stream(BASE, 9.0))


def test_late_audio_after_emission_is_dropped_not_misplaced() -> None:
    seg = Segmenter(D, publish_from=BASE)
    run(seg, av_stream(BASE, 13.0), finish=False)
    before = seg.stats.dropped_late
    seg.push(audio(BASE + S))  # belongs to segment 1000, already emitted
    assert seg.stats.dropped_late == before + 1
