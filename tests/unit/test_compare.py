"""``sidecar compare``: parsing, pair judgement, hazards, segment checks, summary, report."""

from __future__ import annotations

import io
import json
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from rich.console import Console

from sidecar.compare.analyze import (
    Comparison,
    Tracker,
    agreement,
    check_segment,
    compare_listings,
    offsets,
)
from sidecar.compare.command import parse_header, parse_query
from sidecar.compare.media import TS_WRAP_MS, first_timestamps
from sidecar.compare.model import (
    BYTES_DIFFER,
    DIFFERENT,
    DRIFT,
    EDGE,
    IDENTICAL,
    MISSING,
    POLL_ERROR,
    SEQUENCE_BACKWARDS,
    SEQUENCE_CONFLICT,
    CompareError,
    Entry,
    Fetched,
    Listing,
    Multivariant,
    Timing,
)
from sidecar.compare.parse import (
    classify,
    expand_template,
    expand_timeline,
    name_of,
    parse_hls,
    parse_iso_duration,
    parse_mpd,
    strip_query,
)
from sidecar.compare.poll import (
    CompareConfig,
    RateLimiter,
    describe_error,
    labels_for,
    with_query,
)
from sidecar.compare.report import render, to_json, write_png

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hls(first: int, count: int, *, name: str = "{n}.ts", disc: int = 0, dur: float = 2.0,
        pdt_shift: float = 0.0, endlist: bool = False) -> Listing:
    """A media playlist Listing of ``count`` segments from sequence ``first``."""
    entries = tuple(Entry("", n, name.format(n=n), dur, str(disc),
                          T0 + timedelta(seconds=2 * n + pdt_shift)) for n in
                    range(first, first + count))
    header = {"version": "3", "target_duration": "2", "media_sequence": str(first),
              "discontinuity_sequence": str(disc), "playlist_type": "",
              "endlist": "yes" if endlist else ""}
    return Listing("hls-media", header, entries, 2.0, not endlist)


# --------------------------------------------------------------------------------------------
# parse
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "kind"), [
    (b"#EXTM3U\n#EXT-X-VERSION:3\n", "hls"),
    (b"\xef\xbb\xbf\n  #EXTM3U\n", "hls"),
    (b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">', "dash"),
    (b"<mpd:MPD xmlns:mpd='urn:mpeg:dash:schema:mpd:2011'>", "dash"),
    (b'{"status":"ok"}', None),
    (b"<html><body>MPD</body></html>", None),
    (b"", None),
])
def test_classify(body: bytes, kind: str | None) -> None:
    assert classify(body) == kind


@pytest.mark.parametrize(("uri", "expected"), [
    ("5.ts?token=abc", "5.ts"), ("5.ts", "5.ts"), ("a/b.ts#x", "a/b.ts"),
    ("http://h/a.ts?x=1", "http://h/a.ts"),
])
def test_strip_query(uri: str, expected: str) -> None:
    assert strip_query(uri) == expected


@pytest.mark.parametrize(("url", "base", "expected"), [
    ("http://h:1/live/src/5.ts", "http://h:1/live/src/media.m3u8", "5.ts"),
    ("http://h:1/live/video/t9.m4s", "http://h:1/live/manifest.mpd", "video/t9.m4s"),
    ("http://h:1/other/5.ts?k=v", "http://h:1/live/media.m3u8", "../other/5.ts?k=v"),
    ("http://cdn/5.ts", "http://h:1/live/media.m3u8", "http://cdn/5.ts"),
])
def test_name_of(url: str, base: str, expected: str) -> None:
    assert name_of(url, base) == expected


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT2S", 2.0), ("PT1796173352S", 1796173352.0), ("PT1M30.5S", 90.5), ("P1DT2H", 93600.0),
    ("PT0S", 0.0), ("-PT3S", -3.0), ("P1Y", 365 * 86400.0),
])
def test_parse_iso_duration(text: str, seconds: float) -> None:
    assert parse_iso_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "2S", "PTxS"])
def test_parse_iso_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_iso_duration(text)


@pytest.mark.parametrize(("template", "kw", "expected"), [
    ("video/t$Time$.m4s", {"time": 180000}, "video/t180000.m4s"),
    ("$RepresentationID$/seg-$Number%05d$.m4s", {"number": 42}, "v1/seg-00042.m4s"),
    ("$RepresentationID$_$Bandwidth$_$Number$.mp4", {"number": 7}, "v1_800000_7.mp4"),
    ("cost$$$Number$.m4s", {"number": 3}, "cost$3.m4s"),
    ("init-$RepresentationID$.mp4", {}, "init-v1.mp4"),
])
def test_expand_template(template: str, kw: dict[str, int], expected: str) -> None:
    assert expand_template(template, "v1", bandwidth="800000", **kw) == expected  # type: ignore[arg-type]


def test_expand_template_needs_its_identifiers() -> None:
    with pytest.raises(ValueError, match="Number"):
        expand_template("$Number$.m4s", "v1")


@pytest.mark.parametrize(("items", "end", "expected"), [
    ([(100, 10, 2)], None, [(100, 10), (110, 10), (120, 10)]),
    ([(100, 10, 0), (None, 20, 1)], None, [(100, 10), (110, 20), (130, 20)]),
    ([(0, 10, -1), (50, 5, 0)], None, [(0, 10), (10, 10), (20, 10), (30, 10), (40, 10),
                                        (50, 5)]),
    ([(0, 10, -1)], 35, [(0, 10), (10, 10), (20, 10), (30, 10)]),
    ([(0, 10, -1)], None, [(0, 10)]),
    ([(0, 0, 5), (0, 10, 0)], None, [(0, 10)]),
])
def test_expand_timeline(items: list[tuple[int | None, int, int]], end: int | None,
                         expected: list[tuple[int, int]]) -> None:
    assert expand_timeline(items, end) == expected


MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:4
#EXT-X-MAP:URI="init-0.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z
#EXTINF:2.00000,
100.m4s?tok=1
#EXT-X-GAP
#EXTINF:2.00000,
101.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init-1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:01:00.000Z
#EXTINF:1.50000,
http://h:1/live/video/102.m4s
"""


def test_parse_hls_media_playlist() -> None:
    pl = parse_hls(MEDIA, "http://h:1/live/video/media.m3u8")
    assert isinstance(pl, Listing) and pl.kind == "hls-media" and pl.live
    assert pl.header["media_sequence"] == "100" and pl.header["discontinuity_sequence"] == "4"
    assert [(e.seq, e.uri, e.disc, e.gap, e.init) for e in pl.entries] == [
        (100, "100.m4s?tok=1", "4", False, "init-0.mp4"),
        (101, "101.m4s", "4", True, "init-0.mp4"),
        (102, "102.m4s", "5", False, "init-1.mp4"),  # same host: relative, like the others
    ]
    assert [e.pdt for e in pl.entries] == [T0, T0 + timedelta(seconds=2),
                                           T0 + timedelta(minutes=1)]
    assert pl.entries[2].duration == 1.5 and pl.target_duration == 2.0


def test_parse_hls_multivariant_and_vod() -> None:
    mv = parse_hls("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsrc/media.m3u8\n"
                   "#EXT-X-STREAM-INF:BANDWIDTH=2\nhi/media.m3u8\n", "http://h/p.m3u8")
    assert mv == Multivariant(("src/media.m3u8", "hi/media.m3u8"))
    vod = parse_hls("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n"
                    "#EXTINF:4,\na.ts\n#EXT-X-ENDLIST\n", "http://h/v.m3u8")
    assert isinstance(vod, Listing) and not vod.live and vod.header["endlist"] == "yes"
    assert vod.header["playlist_type"] == "VOD" and vod.entries[0].seq == 0


SIDECAR_MPD = b"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
 availabilityStartTime="1970-01-01T00:00:00Z" publishTime="2026-12-02T01:02:45.042Z"
 minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT20S" maxSegmentDuration="PT2S">
  <Period id="e0" start="PT1796173352S">
    <AdaptationSet id="0" contentType="video">
      <SegmentTemplate timescale="90000" presentationTimeOffset="161655601680000"
        initialization="video/init-0.mp4" media="video/t$Time$.m4s">
        <SegmentTimeline><S t="161655601737600" d="180000" r="2" /></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="video" bandwidth="93476" />
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio">
      <SegmentTemplate timescale="90000" presentationTimeOffset="161655601680000"
        initialization="audio/init-0.mp4" media="audio/t$Time$.m4s">
        <SegmentTimeline><S t="161655601737600" d="180000" /></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="audio" bandwidth="97032" />
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="http://h:1/time" />
</MPD>"""


def test_parse_mpd_time_addressing() -> None:
    mpd = parse_mpd(SIDECAR_MPD, "http://h:1/live/demo/manifest.mpd", T0)
    assert mpd.kind == "dash" and mpd.live and mpd.target_duration == 2.0
    assert mpd.header["publishTime"] == "2026-12-02T01:02:45.042Z"
    video = [e for e in mpd.entries if e.track == "video"]
    assert [(e.seq, e.uri) for e in video] == [
        (161655601737600 + k * 180000, f"video/t{161655601737600 + k * 180000}.m4s")
        for k in range(3)]
    assert all(e.init == "video/init-0.mp4" and e.disc == "e0" and e.duration == 2.0
               for e in video)
    # wall-clock start: AST + Period@start + (t - presentationTimeOffset) / timescale
    assert video[0].pdt == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=1796173352 + (161655601737600 - 161655601680000) / 90000)
    assert len([e for e in mpd.entries if e.track == "audio"]) == 1


NUMBER_MPD = b"""<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
 availabilityStartTime="2026-01-01T00:00:00Z" timeShiftBufferDepth="PT8S">
  <BaseURL>media/</BaseURL>
  <Period id="p0" start="PT0S">
    <AdaptationSet>
      <SegmentTemplate timescale="1000" duration="2000" startNumber="10"
        media="$RepresentationID$/$Number%04d$.m4s" initialization="$RepresentationID$/i.mp4"/>
      <Representation id="v1" bandwidth="1000"/>
    </AdaptationSet>
  </Period>
</MPD>"""


def test_parse_mpd_number_addressing_depends_on_now() -> None:
    mpd = parse_mpd(NUMBER_MPD, "http://h/x/manifest.mpd", T0 + timedelta(seconds=21))
    # 21 s after availabilityStartTime: 10 whole segments, the last 4 (8 s) in the buffer
    assert [(e.seq, e.uri) for e in mpd.entries] == [
        (n, f"media/v1/{n:04d}.m4s") for n in range(16, 20)]
    assert mpd.entries[0].init == "media/v1/i.mp4"
    assert mpd.entries[0].pdt == T0 + timedelta(seconds=12)


def test_parse_mpd_segment_list_and_static() -> None:
    body = b"""<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"
      mediaPresentationDuration="PT6S"><Period><AdaptationSet><Representation id="a">
      <SegmentList timescale="1" duration="2"><Initialization sourceURL="a/init.mp4"/>
      <SegmentURL media="a/1.m4s"/><SegmentURL media="a/2.m4s"/></SegmentList>
      </Representation></AdaptationSet></Period></MPD>"""
    mpd = parse_mpd(body, "http://h/v/m.mpd", T0)
    assert not mpd.live
    assert [(e.seq, e.uri, e.init, e.disc) for e in mpd.entries] == [
        (1, "a/1.m4s", "a/init.mp4", "p0"), (2, "a/2.m4s", "a/init.mp4", "p0")]


@pytest.mark.parametrize(("body", "message"), [
    (b"<MPD><Period>", "malformed MPD"),
    (b"<html/>", "not a DASH MPD"),
])
def test_parse_mpd_rejects(body: bytes, message: str) -> None:
    with pytest.raises(CompareError, match=message):
        parse_mpd(body, "http://h/m.mpd", T0)


# --------------------------------------------------------------------------------------------
# analyze: pairs
# --------------------------------------------------------------------------------------------


def _with(listing: Listing, seq: int, **changes: Any) -> Listing:
    entries = tuple(replace(e, **changes) if e.seq == seq else e for e in listing.entries)
    return Listing(listing.kind, listing.header, entries, listing.target_duration, listing.live)


@pytest.mark.parametrize(("a", "b", "state", "fields"), [
    (hls(10, 5), hls(10, 5), IDENTICAL, ()),
    (hls(10, 5), hls(10, 6), EDGE, ("window",)),  # B published one more first
    (hls(10, 5), hls(11, 5), EDGE, ("media_sequence", "window")),  # B's window slid by one
    (hls(10, 5), hls(11, 6), DIFFERENT, ("media_sequence", "window")),  # B two ahead
    (hls(10, 5), hls(12, 5), DIFFERENT, ("media_sequence", "window")),
    (hls(10, 5), hls(10, 5, name="seg-{n}.ts"), DIFFERENT, ("uris",)),
    (hls(10, 5), hls(10, 5, name="{n}.ts?session=42"), IDENTICAL, ()),  # as hls.js compares
    (hls(10, 5), hls(10, 5, disc=1), DIFFERENT, ("discontinuities", "discontinuity_sequence")),
    (hls(10, 5), hls(10, 5, dur=2.002), DIFFERENT, ("durations",)),
    (hls(10, 5), hls(10, 5, pdt_shift=0.04), DIFFERENT, ("program_date_times",)),
    (hls(10, 5), hls(10, 5, endlist=True), DIFFERENT, ("endlist",)),
    (hls(10, 5), _with(hls(10, 5), 12, gap=True), DIFFERENT, ("gaps",)),
    (hls(10, 5), hls(10, 0), DIFFERENT, ("window",)),
])
def test_compare_listings(a: Listing, b: Listing, state: str, fields: tuple[str, ...]) -> None:
    diff = compare_listings(a, b)
    assert (diff.state, diff.fields) == (state, fields)


def test_compare_listings_hole_in_the_middle_is_not_in_step() -> None:
    a = hls(10, 5)
    holed = Listing(a.kind, a.header, tuple(e for e in a.entries if e.seq != 12),
                    a.target_duration, a.live)
    assert compare_listings(a, holed).state == DIFFERENT


# --------------------------------------------------------------------------------------------
# analyze: hazards over time
# --------------------------------------------------------------------------------------------


def test_tracker_reports_a_sequence_conflict_once() -> None:
    tr = Tracker(["A", "B"])
    events, active = tr.observe(0.0, [hls(10, 3), hls(10, 3, name="seg-{n}.ts")])
    assert active and [e.kind for e in events] == [SEQUENCE_CONFLICT] * 3
    assert "seq 10: 10.ts (discontinuity 0) on A vs seg-10.ts (discontinuity 0) on B" == \
        events[0].detail
    again, active = tr.observe(0.5, [hls(10, 3), hls(10, 3, name="seg-{n}.ts")])
    assert active and again == []


def test_tracker_conflict_across_time_on_other_origin_and_discontinuity() -> None:
    tr = Tracker(["A", "B"])
    tr.observe(0.0, [hls(10, 3), None])
    events, _ = tr.observe(0.5, [None, hls(12, 2, disc=1)])
    assert [e.detail.split(":")[0] for e in events] == ["seq 12"]
    assert "discontinuity 0) on A vs 12.ts (discontinuity 1) on B" in events[0].detail
    assert events[0].origins == (0, 1)


@pytest.mark.parametrize(("polls", "kinds"), [
    # the straddle: B publishes one segment first, A catches up at the next poll
    ([(hls(10, 5), hls(10, 5)), (hls(10, 5), hls(10, 6)), (hls(10, 6), hls(10, 6))], []),
    # A stays where it was: B had 15, A still ends at 14 one poll later
    ([(hls(10, 5), hls(10, 6)), (hls(10, 5), hls(10, 6))], [SEQUENCE_BACKWARDS]),
    # two segments apart at one instant
    ([(hls(10, 5), hls(10, 7))], [SEQUENCE_BACKWARDS]),
    # one episode, one event; a new episode after catching up, a new event
    ([(hls(10, 5), hls(10, 7)), (hls(10, 5), hls(10, 8)), (hls(10, 8), hls(10, 8)),
      (hls(10, 8), hls(10, 10))], [SEQUENCE_BACKWARDS, SEQUENCE_BACKWARDS]),
])
def test_tracker_backwards(polls: list[tuple[Listing, Listing]], kinds: list[str]) -> None:
    tr = Tracker(["A", "B"])
    seen: list[str] = []
    for k, (a, b) in enumerate(polls):
        events, _ = tr.observe(k * 0.5, [a, b])
        seen += [e.kind for e in events]
    assert seen == kinds


def test_tracker_forgets_old_mappings() -> None:
    tr = Tracker(["A"])
    tr.observe(0.0, [hls(10, 1)])
    events, active = tr.observe(200.0, [hls(10, 1, name="new-{n}.ts")])
    assert events == [] and not active


# --------------------------------------------------------------------------------------------
# analyze: segments and the run
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "wrap", "offs", "drift"), [
    ([100.0, 100.0], None, (0.0, 0.0), 0.0),
    ([100.0, 140.0, None], None, (0.0, 40.0, None), 40.0),
    ([None, 5.0, 1.0], None, (None, 0.0, -4.0), 4.0),
    ([None, None], None, (None, None), None),
    ([TS_WRAP_MS - 20.0, 20.0], TS_WRAP_MS, (0.0, 40.0), 40.0),  # across the 33-bit wrap
])
def test_offsets(values: list[float | None], wrap: float | None,
                 offs: tuple[float | None, ...], drift: float | None) -> None:
    assert offsets(values, wrap) == (offs, drift)


def _ok(sha: str, video: float | None = 1000.0, audio: float | None = 1000.0,
        etag: str | None = '"e"') -> Fetched:
    return Fetched(200, None, sha, etag, 100, Timing(video, audio, 40.0, None))


@pytest.mark.parametrize(("fetched", "kinds", "bytes_equal", "etag_equal", "frames"), [
    ([_ok("x"), _ok("x")], [], True, True, 0.0),
    ([_ok("x"), _ok("x", etag=None)], [], True, None, 0.0),
    ([_ok("x"), _ok("y", etag='"f"')], [BYTES_DIFFER], False, False, 0.0),
    ([_ok("x"), _ok("y", video=1080.0)], [BYTES_DIFFER, DRIFT], False, True, 2.0),
    ([_ok("x"), _ok("y", audio=1021.333)], [BYTES_DIFFER, DRIFT], False, True, 0.0),
    ([_ok("x"), Fetched(404)], [MISSING], None, None, None),
    ([Fetched(None, "timed out"), Fetched(503)], [MISSING, MISSING], None, None, None),
])
def test_check_segment(fetched: list[Fetched], kinds: list[str], bytes_equal: bool | None,
                       etag_equal: bool | None, frames: float | None) -> None:
    check, events = check_segment(1.0, "", "7.ts", fetched, ["A", "B"], now=2.5)
    assert [e.kind for e in events] == kinds
    assert all(e.t == 2.5 for e in events)
    assert (check.bytes_equal, check.etag_equal, check.video_drift_frames) == (
        bytes_equal, etag_equal, frames)


def test_check_segment_details_name_origin_and_drift() -> None:
    _, events = check_segment(0.0, "", "7.ts", [Fetched(404), _ok("x")], ["A", "B"])
    assert events[0].detail == "7.ts: HTTP 404 on A" and events[0].origins == (0,)
    _, events = check_segment(0.0, "", "7.ts", [_ok("x"), _ok("x", video=3040.0)], ["A", "B"])
    assert events[0].detail == "7.ts: first video frame 2040 ms (51 frames) apart"


@pytest.mark.parametrize(("points", "end", "first", "longest"), [
    ([], 10.0, None, 0.0),
    ([(0.0, True), (5.0, True)], 10.0, None, 10.0),
    ([(0.0, True), (4.0, False), (6.0, True)], 10.0, 4.0, 4.0),
    ([(0.0, True), (2.0, False), (3.0, True), (9.5, True)], 10.0, 2.0, 7.0),
    ([(0.1, False), (1.0, True)], 10.0, 0.1, 9.0),
    ([(0.0, True), (3.0, False), (3.0, True)], 10.0, 3.0, 7.0),  # an event at a good poll
    ([(0.0, False), (5.0, False)], 10.0, 0.0, 0.0),
])
def test_agreement(points: list[tuple[float, bool]], end: float, first: float | None,
                   longest: float) -> None:
    assert agreement(points, end) == (first, longest)


def _comparison() -> Comparison:
    return Comparison(["http://a/p.m3u8", "http://b/p.m3u8"], ["A", "B"], "hls-media",
                      ["http://a/p.m3u8", "http://b/p.m3u8"])


def test_summary_of_interchangeable_origins() -> None:
    cmp = _comparison()
    cmp.add_instant(0.0, [hls(10, 5), hls(10, 5)])
    cmp.add_instant(0.5, [hls(10, 5), hls(10, 6)])  # the live edge, in step
    cmp.add_instant(1.0, [hls(10, 6), hls(10, 6)])
    cmp.add_check(*check_segment(0.0, "", "10.ts", [_ok("x"), _ok("x")], cmp.labels))
    s = cmp.summary(2.0)
    assert (s.exit_code, s.interchangeable, s.first_divergence_s, s.longest_agreement_s) == (
        0, True, None, 2.0)
    assert s.shares["identical"] == pytest.approx(2 / 3, abs=1e-4)
    assert s.shares["in_step"] == s.shares["segments_identical"] == s.shares["no_drift"] == 1.0
    assert s.pairs[0].edge == 1 and s.pairs[0].fields == {"window": 1}
    assert sum(s.hazards.values()) == 0


def test_summary_of_diverging_origins() -> None:
    cmp = _comparison()
    cmp.add_instant(0.0, [hls(10, 5), hls(10, 5)])
    cmp.add_instant(0.5, [hls(10, 5), "HTTP 503"])
    cmp.add_instant(1.0, [hls(10, 5), "HTTP 503"])  # one event per failing episode
    cmp.add_instant(1.5, [hls(10, 5), hls(10, 5, name="x{n}.ts")])
    s = cmp.summary(3.0)
    assert (s.exit_code, s.first_divergence_s, s.longest_agreement_s) == (1, 0.5, 0.5)
    assert s.hazards[POLL_ERROR] == 1 and s.hazards[SEQUENCE_CONFLICT] == 5
    assert s.shares["answered"] == 0.75 and s.differences == {"uris": 1}


def test_summary_without_any_poll_is_exit_2() -> None:
    s = _comparison().summary(0.0, interrupted=True)
    assert s.exit_code == 2 and not s.interchangeable and s.interrupted


# --------------------------------------------------------------------------------------------
# poll helpers, command helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "labels"), [(2, ["A", "B"]), (3, ["A", "B", "C"])])
def test_labels_for(n: int, labels: list[str]) -> None:
    assert labels_for(n) == labels


def test_labels_for_many() -> None:
    assert labels_for(28)[25:] == ["Z", "AA", "AB"]


@pytest.mark.parametrize(("url", "query", "expected"), [
    ("http://h/p.m3u8", [], "http://h/p.m3u8"),
    ("http://h/p.m3u8", [("token", "a b")], "http://h/p.m3u8?token=a+b"),
    ("http://h/p.m3u8?x=1&token=old", [("token", "new")], "http://h/p.m3u8?x=1&token=new"),
])
def test_with_query(url: str, query: list[tuple[str, str]], expected: str) -> None:
    assert with_query(url, query) == expected


def _chained(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(("exc", "text"), [
    (_chained(httpx.ConnectError("All connection attempts failed"),
              ConnectionRefusedError(111, "Connect call failed")), "connection refused"),
    (_chained(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "self-signed")),
     "TLS error: self-signed"),
    (httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     "TLS error: [SSL: WRONG_VERSION_NUMBER] wrong version number"),
    (httpx.ReadTimeout("read"), "timed out (ReadTimeout)"),
    (httpx.RemoteProtocolError("bad"), "RemoteProtocolError: bad"),
])
def test_describe_error(exc: Exception, text: str) -> None:
    assert describe_error(exc) == text


def test_rate_limiter_spends_and_waits() -> None:
    now = [0.0]
    lim = RateLimiter(10.0, 2.0, clock=lambda: now[0])
    assert lim.wait_for(2) == 0.0  # the burst
    assert lim.wait_for(1) == pytest.approx(0.1)
    now[0] = 0.1
    assert lim.wait_for(1) == 0.0
    now[0] = 10.0
    assert lim.wait_for(5) == 0.0 and lim.tokens == -3.0  # more than the burst: a debt
    assert lim.wait_for(1) == pytest.approx(0.4)


@pytest.mark.parametrize(("text", "pair"), [
    ("Authorization: Bearer x:y", ("Authorization", "Bearer x:y")),
    ("X-Token:abc", ("X-Token", "abc")),
])
def test_parse_header(text: str, pair: tuple[str, str]) -> None:
    assert parse_header(text) == pair


@pytest.mark.parametrize("text", ["novalue", ": x", "Bad Name: x"])
def test_parse_header_rejects(text: str) -> None:
    with pytest.raises(CompareError, match="Name: value"):
        parse_header(text)


def test_parse_query() -> None:
    assert parse_query("token=a=b") == ("token", "a=b")
    with pytest.raises(CompareError, match="name=value"):
        parse_query("token")


# --------------------------------------------------------------------------------------------
# media: real PyAV output
# --------------------------------------------------------------------------------------------


def _ts(start_s: float, fmt: str = "mpegts") -> bytes:
    """Ten frames of 25 fps H.264 and AAC starting at ``start_s``, muxed by PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        v.options = {"bf": "0"}
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"  # type: ignore[union-attr]
        v.time_base = Fraction(1, 90000)
        for k in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = round((start_s + k / 25) * 90000)
            frame.time_base = Fraction(1, 90000)
            for p in v.encode(frame):
                out.mux(p)
        for k in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                            layout="stereo")
            af.sample_rate = 48000
            af.pts = round(start_s * 48000) + 1024 * k
            af.time_base = Fraction(1, 48000)
            for p in a.encode(af):
                out.mux(p)
        for stream in (v, a):
            for p in stream.encode(None):
                out.mux(p)
    return buf.getvalue()


def test_first_timestamps_of_a_ts_segment() -> None:
    timing = first_timestamps(_ts(100.0))
    assert timing is not None and timing.video_ms is not None and timing.audio_ms is not None
    # mpegts adds its muxing delay to both tracks alike; the video frame is 40 ms
    other = first_timestamps(_ts(100.08))
    assert other is not None and other.video_ms is not None
    assert other.video_ms - timing.video_ms == pytest.approx(80.0, abs=0.02)
    assert timing.frame_ms == pytest.approx(40.0) and timing.wrap_ms == TS_WRAP_MS


def test_first_timestamps_of_garbage() -> None:
    assert first_timestamps(b"\x00" * 1000) is None


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _diverged() -> Comparison:
    cmp = _comparison()
    cmp.add_instant(0.0, [hls(10, 5), hls(10, 5, name="seg-{n}.ts")])
    cmp.add_check(*check_segment(0.0, "", "10.ts", [_ok("x"), _ok("y", video=1080.0)],
                                 cmp.labels, start=-8.0))
    return cmp


def test_render_names_verdict_and_first_hazards() -> None:
    cmp = _diverged()
    console = Console(record=True, width=120)
    render(cmp, cmp.summary(1.0), console)
    text = console.export_text()
    assert "NOT INTERCHANGEABLE (exit 1)" in text
    assert "sequence_conflict" in text and "seq 10: 10.ts (discontinuity 0) on A" in text
    assert "first video frame max 80 ms (2 frames)" in text


def test_json_report_is_complete_and_hides_header_values() -> None:
    cmp = _diverged()
    cfg = CompareConfig(urls=tuple(cmp.urls), headers=(("Authorization", "secret"),))
    data = json.loads(json.dumps(to_json(cmp, cmp.summary(1.0), cfg)))
    assert data["exit_code"] == 1 and data["verdict"] == "not interchangeable"
    assert data["hazards"]["sequence_conflict"] == 5 and data["hazards"]["drift"] == 1
    assert data["segment_checks"][0]["video_offsets_ms"] == [0.0, 80.0]
    assert data["polls"][0]["pairs"][0]["state"] == DIFFERENT
    assert data["settings"]["headers"] == ["Authorization"] and "secret" not in json.dumps(data)


def test_png_report(tmp_path: Path) -> None:
    cmp = _diverged()
    path = tmp_path / "r.png"
    write_png(path, cmp, cmp.summary(1.0))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
