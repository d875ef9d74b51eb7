from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from sidecar.manifests.dash import media_path, render_mpd, xs_duration
from sidecar.model import Epoch, Part, SegmentRecord, TrackDesc
from sidecar.timeline import (
    Presentation,
    build_media_playlist,
    build_presentation,
    short_tail_limit,
)

S = 90_000
D = 6 * S
N0 = 293_333_330  # a slot number of 2025 at D = 6 s
NS = {"m": "urn:mpeg:dash:schema:mpd:2011"}
# Our own hand-written schema of the MPD subset the renderer emits (not MPEG's official
# DASH-MPD.xsd; see tests/data/dash/README.md). Self-contained: no imports, no network.
SUBSET_XSD = Path(__file__).resolve().parents[1] / "data" / "dash" / "mpd-live-subset.xsd"
XS = "{http://www.w3.org/2001/XMLSchema}"

VIDEO = TrackDesc("video", "avc1.64001F", 640, 360, "25", init=Part("video", "1" * 64, 800))
AUDIO = TrackDesc("audio", "mp4a.40.2", sample_rate=48_000, channels=2,
                  init=Part("audio", "2" * 64, 600))


@cache
def schema() -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(SUBSET_XSD), parser))


def rec(n: int, epoch: int = 0, dur: int | None = None, start: int | None = None,
        duration: int = D) -> SegmentRecord:
    """Segment ``n`` of a grid with slot length ``duration``; ``dur``/``start`` override."""
    parts = (Part("video", f"{n:064x}", 1000), Part("audio", f"{n + 1:064x}", 100))
    return SegmentRecord("live/x", n, epoch, n * duration if start is None else start,
                         duration if dur is None else dur, parts,
                         (n + 1) * duration + S // 2, "a")


def present(records: list[SegmentRecord], tracks: dict[int, tuple[TrackDesc, ...]], *,
            duration: int = D, window: int = 10, publish_time: int | None = None,
            bandwidth: dict[str, int] | None = None) -> Presentation:
    epoch_first: dict[int, int] = {}
    for r in records:
        epoch_first.setdefault(r.epoch, r.number)
    epochs = {e: Epoch("live/x", e, 0, 0, 0, 0, "a", tracks=t) for e, t in tracks.items()}
    pl = build_media_playlist(records, epoch_first, window=window, duration=duration)
    assert pl is not None
    return build_presentation(
        pl, epochs, epoch_first, duration=duration, time_shift_buffer=5 * duration,
        publish_time=records[-1].end + 3 * S if publish_time is None else publish_time,
        bandwidth={"video": 800_000, "audio": 128_000} if bandwidth is None else bandwidth,
        suggested_delay=3 * duration + 4 * S, min_buffer_time=2 * duration)


def parse(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


def expand(timeline: etree._Element) -> list[tuple[int, int]]:
    """``(t, d)`` of every segment an ``SegmentTimeline`` lists (DASH 5.3.9.6)."""
    out: list[tuple[int, int]] = []
    end = 0
    for s in timeline.iterfind("m:S", NS):
        t = int(s.get("t")) if s.get("t") is not None else end
        d = int(s.get("d"))
        for _ in range(int(s.get("r", "0")) + 1):
            out.append((t, d))
            t += d
        end = t
    return out


@dataclass
class Case:
    records: list[SegmentRecord]
    tracks: dict[int, tuple[TrackDesc, ...]]
    periods: list[tuple[str, int]]  # (Period@id, start in ticks)
    timelines: list[list[tuple[int | None, int, int]]]  # per period: (S@t, S@d, S@r)
    duration: int = D
    kinds: tuple[str, ...] = ("video", "audio")
    connected: list[bool] = field(default_factory=list)  # per period after the first


V30 = TrackDesc("video", "avc1.64001F", 1280, 720, "30000/1001",
                init=Part("video", "3" * 64, 900))
D30 = 96 * 3003  # 96 frames at 30000/1001: 3.2032 s
OTHER_INIT = TrackDesc("video", "avc1.640028", 1920, 1080, "25",
                       init=Part("video", "4" * 64, 810))

CASES = {
    "one period": Case(
        [rec(n) for n in range(N0, N0 + 12)], {0: (VIDEO, AUDIO)},
        [("e0", N0 * D)], [[((N0 + 2) * D, D, 9)]]),
    "two periods, epoch change": Case(
        [rec(n) for n in range(N0, N0 + 4)] + [rec(n, 1) for n in range(N0 + 5, N0 + 9)],
        {0: (VIDEO, AUDIO), 1: (VIDEO, AUDIO)},
        [("e0", N0 * D), ("e1", (N0 + 5) * D)],
        [[(N0 * D, D, 3)], [((N0 + 5) * D, D, 3)]], connected=[True]),
    "two periods, new encoder config": Case(
        [rec(n) for n in range(N0, N0 + 3)] + [rec(n, 1) for n in range(N0 + 3, N0 + 6)],
        {0: (VIDEO,), 1: (OTHER_INIT,)},
        [("e0", N0 * D), ("e1", (N0 + 3) * D)],
        [[(N0 * D, D, 2)], [((N0 + 3) * D, D, 2)]], kinds=("video",), connected=[False]),
    "hole inside a period": Case(
        [rec(n) for n in (N0, N0 + 1, N0 + 4, N0 + 5, N0 + 6)], {0: (VIDEO, AUDIO)},
        [("e0", N0 * D)], [[(N0 * D, D, 1), ((N0 + 4) * D, D, 2)]]),
    "video only": Case(
        [rec(n) for n in range(N0, N0 + 3)], {0: (VIDEO,)},
        [("e0", N0 * D)], [[(N0 * D, D, 2)]], kinds=("video",)),
    "audio only": Case(
        [rec(n) for n in range(N0, N0 + 3)], {0: (AUDIO,)},
        [("e0", N0 * D)], [[(N0 * D, D, 2)]], kinds=("audio",)),
    # 30000/1001 fps, D = 96 frames; a late keyframe makes one segment a frame longer
    # and the next a frame shorter: an S without @t for each new duration.
    "30000/1001 fps, uneven durations": Case(
        [rec(N0, duration=D30), rec(N0 + 1, duration=D30),
         rec(N0 + 2, dur=D30 + 3003, duration=D30),
         rec(N0 + 3, dur=D30 - 3003, start=(N0 + 3) * D30 + 3003, duration=D30),
         rec(N0 + 4, duration=D30)],
        {0: (V30, AUDIO)}, [("e0", N0 * D30)],
        [[(N0 * D30, D30, 1), (None, D30 + 3003, 0), (None, D30 - 3003, 0), (None, D30, 0)]],
        duration=D30),
    # The encoder stopped 0.4 s into a slot: that tail of epoch 0 is left out of its Period
    # (below a second, see timeline.short_tail_limit); the next Period is untouched.
    "short tail of an epoch left out": Case(
        [rec(n) for n in range(N0, N0 + 3)] + [rec(N0 + 3, dur=36_000)]
        + [rec(n, 1) for n in range(N0 + 5, N0 + 8)],
        {0: (VIDEO, AUDIO), 1: (VIDEO, AUDIO)},
        [("e0", N0 * D), ("e1", (N0 + 5) * D)],
        [[(N0 * D, D, 2)], [((N0 + 5) * D, D, 2)]], connected=[True]),
    # A tail of a second or more stays.
    "one-second tail kept": Case(
        [rec(n) for n in range(N0, N0 + 3)] + [rec(N0 + 3, dur=S)]
        + [rec(n, 1) for n in range(N0 + 5, N0 + 8)],
        {0: (VIDEO, AUDIO), 1: (VIDEO, AUDIO)},
        [("e0", N0 * D), ("e1", (N0 + 5) * D)],
        [[(N0 * D, D, 2), (None, S, 0)], [((N0 + 5) * D, D, 2)]], connected=[True]),
}


@pytest.mark.parametrize(("duration", "limit"), [
    (6 * S, S), (2 * S, S), (S, S // 2), (S // 2, S // 4), (3 * S // 2, 3 * S // 4)])
def test_short_tail_limit_is_a_second_and_never_half_a_slot(duration: int, limit: int) -> None:
    assert short_tail_limit(duration) == limit


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_mpd_structure_timeline_and_schema(case: Case) -> None:
    p = present(case.records, case.tracks, duration=case.duration)
    text = render_mpd(p, utc_timing_url="https://origin.example/time?iso")
    doc = parse(text)
    schema().assertValid(doc)

    assert doc.get("type") == "dynamic"
    assert doc.get("availabilityStartTime") == "1970-01-01T00:00:00Z"
    assert doc[-1].tag == f"{{{NS['m']}}}UTCTiming"
    assert doc[-1].get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014"
    assert doc[-1].get("value") == "https://origin.example/time?iso"
    for name in ("minimumUpdatePeriod", "timeShiftBufferDepth", "suggestedPresentationDelay",
                 "minBufferTime", "maxSegmentDuration"):
        assert re.fullmatch(r"PT\d+(\.\d{1,5})?S", doc.get(name)), name

    periods = doc.findall("m:Period", NS)
    assert [(q.get("id"), q.get("start")) for q in periods] == [
        (i, xs_duration(start)) for i, start in case.periods]
    listed = {q.id: [(e.start, e.duration) for e in q.segments] for q in p.periods}
    for i, (q, want) in enumerate(zip(periods, case.timelines, strict=True)):
        sets = q.findall("m:AdaptationSet", NS)
        assert tuple(a.get("contentType") for a in sets) == case.kinds
        for a in sets:
            kind = a.get("contentType")
            tpl = a.find("m:SegmentTemplate", NS)
            assert tpl.get("timescale") == "90000"
            assert int(tpl.get("presentationTimeOffset")) == case.periods[i][1]
            assert tpl.get("initialization") == f"{kind}/init-{p.periods[i].epoch}.mp4"
            timeline = tpl.find("m:SegmentTimeline", NS)
            got = [(None if s.get("t") is None else int(s.get("t")), int(s.get("d")),
                    int(s.get("r", "0"))) for s in timeline]
            assert got == want
            segments = expand(timeline)
            assert segments == listed[q.get("id")]
            assert sum(d for _, d in segments) == sum(e.duration for e in p.periods[i].segments)
            urls = [tpl.get("media").replace("$Time$", str(t)) for t, _ in segments]
            assert urls == [media_path(kind, t) for t, _ in segments]
            assert a.find("m:Representation", NS).get("id") == kind
            link = a.find("m:SupplementalProperty", NS)
            if i == 0:
                assert link is None
            elif case.connected[i - 1]:
                assert link.get("schemeIdUri") == "urn:mpeg:dash:period-connectivity:2015"
                assert link.get("value") == periods[i - 1].get("id")
            else:
                assert link is None


def test_fixed_inputs_give_fixed_bytes() -> None:
    records = [rec(n) for n in range(N0, N0 + 3)]
    expected = f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" \
profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" \
availabilityStartTime="1970-01-01T00:00:00Z" publishTime="2025-10-09T08:53:21.000Z" \
minimumUpdatePeriod="PT6S" timeShiftBufferDepth="PT30S" suggestedPresentationDelay="PT22S" \
minBufferTime="PT12S" maxSegmentDuration="PT6S">
  <Period id="e0" start="PT1759999980S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" \
startWithSAP="1" maxWidth="640" maxHeight="360" maxFrameRate="25">
      <SegmentTemplate timescale="90000" presentationTimeOffset="{N0 * D}" \
initialization="video/init-0.mp4" media="video/t$Time$.m4s">
        <SegmentTimeline>
          <S t="{N0 * D}" d="540000" r="2" />
        </SegmentTimeline>
      </SegmentTemplate>
      <Representation id="video" bandwidth="800000" codecs="avc1.64001F" width="640" \
height="360" frameRate="25" />
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" segmentAlignment="true" \
startWithSAP="1">
      <AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" \
value="2" />
      <SegmentTemplate timescale="90000" presentationTimeOffset="{N0 * D}" \
initialization="audio/init-0.mp4" media="audio/t$Time$.m4s">
        <SegmentTimeline>
          <S t="{N0 * D}" d="540000" r="2" />
        </SegmentTimeline>
      </SegmentTemplate>
      <Representation id="audio" bandwidth="128000" codecs="mp4a.40.2" \
audioSamplingRate="48000" />
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/time" />
</MPD>
"""
    first = render_mpd(present(records, {0: (VIDEO, AUDIO)}), utc_timing_url="/time")
    again = render_mpd(present(list(records), {0: (VIDEO, AUDIO)}), utc_timing_url="/time")
    assert first == expected
    assert again == first


@pytest.mark.parametrize(("ticks", "text"), [
    (0, "PT0S"),
    (6 * S, "PT6S"),
    (288_000, "PT3.2S"),            # D = 3.2 s
    (D30, "PT3.2032S"),             # 96 frames at 30000/1001
    (3003, "PT0.03337S"),           # one 29.97 fps frame: 0.033366... rounded half up
    (30_000, "PT0.33333S"),         # 1/3 s
    (60_000, "PT0.66667S"),
    (1, "PT0.00001S"),
    (N0 * D, "PT1759999980S"),
    (N0 * D + 45_000, "PT1759999980.5S"),
])
def test_durations_are_exact_decimals_without_float_noise(ticks: int, text: str) -> None:
    assert xs_duration(ticks) == text


def test_segment_duration_3_2_s_renders_pt3_2s_and_validates() -> None:
    d = 288_000
    records = [rec(n, duration=d) for n in range(N0, N0 + 4)]
    doc = parse(render_mpd(present(records, {0: (VIDEO, AUDIO)}, duration=d),
                           utc_timing_url="/time"))
    schema().assertValid(doc)
    assert doc.get("minimumUpdatePeriod") == "PT3.2S"
    assert doc.get("maxSegmentDuration") == "PT3.2S"
    assert doc.get("suggestedPresentationDelay") == "PT13.6S"
    assert doc.find("m:Period", NS).get("start") == xs_duration(N0 * d)


@pytest.mark.parametrize(("ticks", "text"), [
    (N0 * D, "2025-10-09T08:53:00.000Z"),
    (N0 * D + 11_111, "2025-10-09T08:53:00.123Z"),  # 0.123455... s: truncated to ms
    (N0 * D + 89_999, "2025-10-09T08:53:00.999Z"),
])
def test_publish_time_is_utc_with_milliseconds(ticks: int, text: str) -> None:
    records = [rec(n) for n in range(N0, N0 + 2)]
    doc = parse(render_mpd(present(records, {0: (VIDEO,)}, publish_time=ticks),
                           utc_timing_url="/time"))
    assert doc.get("publishTime") == text
    schema().assertValid(doc)


def test_gap_between_periods_keeps_period_starts_and_no_duration() -> None:
    # Epoch 0 ends with two empty slots before epoch 1 starts: Period e1 starts at its own
    # first slot, e0's media ends before it, and no Period@duration is written.
    records = [rec(n) for n in range(N0, N0 + 3)] + [rec(n, 1) for n in range(N0 + 5, N0 + 7)]
    doc = parse(render_mpd(present(records, {0: (VIDEO,), 1: (VIDEO,)}),
                           utc_timing_url="/time"))
    schema().assertValid(doc)
    periods = doc.findall("m:Period", NS)
    assert [q.get("start") for q in periods] == [xs_duration(N0 * D), xs_duration((N0 + 5) * D)]
    assert all(q.get("duration") is None for q in periods)
    first = expand(periods[0].find("m:AdaptationSet/m:SegmentTemplate/m:SegmentTimeline", NS))
    assert first[-1][0] + first[-1][1] == (N0 + 3) * D


def test_max_segment_duration_covers_the_longest_listed_segment() -> None:
    records = [rec(N0), rec(N0 + 1, dur=D + 3600), rec(N0 + 2, start=(N0 + 2) * D + 3600,
                                                        dur=D - 3600)]
    doc = parse(render_mpd(present(records, {0: (VIDEO,)}), utc_timing_url="/time"))
    assert doc.get("maxSegmentDuration") == "PT6.04S"
    assert doc.get("minimumUpdatePeriod") == "PT6S"


def test_presentation_without_periods_raises() -> None:
    empty = Presentation((), 0, D, 5 * D, 22 * S, 12 * S, ())
    with pytest.raises(ValueError, match="without periods"):
        render_mpd(empty, utc_timing_url="/time")


def test_epoch_without_cmaf_tracks_is_an_empty_period() -> None:
    # An epoch whose codecs cannot go into CMAF has no init segments: its Period is listed
    # (the time span exists) without adaptation sets, which the schema allows.
    mp3 = TrackDesc("audio", "mp4a.40.34", sample_rate=44_100, channels=2,
                    unsupported="mp3 audio cannot be packaged as CMAF")
    records = [rec(n) for n in range(N0, N0 + 2)] + [rec(n, 1) for n in range(N0 + 2, N0 + 4)]
    doc = parse(render_mpd(present(records, {0: (VIDEO, AUDIO), 1: (mp3,)}),
                           utc_timing_url="/time"))
    schema().assertValid(doc)
    periods = doc.findall("m:Period", NS)
    assert [len(q.findall("m:AdaptationSet", NS)) for q in periods] == [2, 0]


@pytest.mark.parametrize(("channels", "value"), [(1, "1"), (2, "2"), (6, "6"), (8, "7"),
                                                  (0, None), (16, None)])
def test_audio_channel_configuration_uses_cicp_indices(channels: int, value: str | None) -> None:
    audio = TrackDesc("audio", "mp4a.40.2", sample_rate=48_000, channels=channels,
                      init=Part("audio", "2" * 64, 600))
    doc = parse(render_mpd(present([rec(N0)], {0: (audio,)}), utc_timing_url="/time"))
    schema().assertValid(doc)
    acc = doc.find("m:Period/m:AdaptationSet/m:AudioChannelConfiguration", NS)
    assert (acc.get("value") if acc is not None else None) == value


def test_schema_rejects_a_broken_mpd() -> None:
    # The validator is live: UTCTiming before Period is out of the schema's order.
    doc = parse(render_mpd(present([rec(N0)], {0: (VIDEO,)}), utc_timing_url="/time"))
    timing = doc[-1]
    doc.remove(timing)
    doc.insert(0, timing)
    assert not schema().validate(doc)


def _first(doc: etree._Element, path: str) -> etree._Element:
    el = doc.find(path, NS)
    assert el is not None, path
    return el


# Each breaks one rule of the subset schema; the error must name what was broken.
BREAKAGES = {
    "unknown attribute": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:Representation").set("foo", "1"),
        "foo"),
    "unknown attribute on MPD": (lambda d: d.set("mediaPresentationDurationX", "PT1S"),
                                 "mediaPresentationDurationX"),
    "unknown element": (
        lambda d: etree.SubElement(_first(d, "m:Period"), f"{{{NS['m']}}}Label"), "Label"),
    "missing Representation@bandwidth": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:Representation").attrib.pop(
            "bandwidth"), "bandwidth"),
    "missing S@d": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:SegmentTemplate/m:SegmentTimeline/m:S")
        .attrib.pop("d"), "'d'"),
    "missing MPD@profiles": (lambda d: d.attrib.pop("profiles"), "profiles"),
    "missing UTCTiming@value": (lambda d: d[-1].attrib.pop("value"), "value"),
    "minBufferTime is not a duration": (lambda d: d.set("minBufferTime", "12"),
                                        "minBufferTime"),
    "minBufferTime in seconds, lower case": (lambda d: d.set("minBufferTime", "PT12s"),
                                             "minBufferTime"),
    "publishTime is not a dateTime": (lambda d: d.set("publishTime", "1760000000"),
                                      "publishTime"),
    "MPD@type outside static|dynamic": (lambda d: d.set("type", "live"), "type"),
    "negative timescale": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:SegmentTemplate").set(
            "timescale", "-90000"), "timescale"),
    "frameRate with zero denominator": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:Representation").set(
            "frameRate", "30000/0"), "frameRate"),
    "codecs with a blank": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:Representation").set(
            "codecs", "avc1.64001F, mp4a.40.2"), "codecs"),
    "SegmentTemplate after Representation": (
        lambda d: _first(d, "m:Period/m:AdaptationSet").append(
            _first(d, "m:Period/m:AdaptationSet/m:SegmentTemplate")), "SegmentTemplate"),
    "empty SegmentTimeline": (
        lambda d: [t.getparent().remove(t) for t in d.iterfind(
            "m:Period/m:AdaptationSet/m:SegmentTemplate/m:SegmentTimeline/m:S", NS)],
        "SegmentTimeline"),
    "descriptor without schemeIdUri": (
        lambda d: _first(d, "m:Period/m:AdaptationSet/m:AudioChannelConfiguration").attrib.pop(
            "schemeIdUri"), "schemeIdUri"),
    "wrong namespace": (lambda d: setattr(d, "tag", "{urn:mpeg:dash:schema:mpd:2012}MPD"),
                        "validation root"),
}


@pytest.mark.parametrize(("mutate", "named"), BREAKAGES.values(), ids=BREAKAGES.keys())
def test_schema_rejects_each_broken_rule(mutate: Callable[[etree._Element], object],
                                        named: str) -> None:
    doc = parse(render_mpd(present([rec(N0)], {0: (VIDEO, AUDIO)}), utc_timing_url="/time"))
    assert schema().validate(doc), "the unbroken MPD must be valid"
    mutate(doc)
    assert not schema().validate(doc)
    assert named in str(schema().error_log)


def test_subset_schema_is_closed_and_self_contained() -> None:
    # No wildcards (so nothing outside the subset validates), no imports or includes
    # (so no network and no third-party schema files), and a header saying what it is.
    root = etree.parse(str(SUBSET_XSD), etree.XMLParser(no_network=True)).getroot()
    for tag in ("any", "anyAttribute", "import", "include", "redefine"):
        assert root.find(f".//{XS}{tag}") is None, tag
    assert root.get("targetNamespace") == NS["m"]
    header = SUBSET_XSD.read_text().split("<xs:schema", 1)[0]
    assert "Hand-written" in header and "NOT the official" in header
