"""Render the live (dynamic) DASH MPD from the timeline model, in one place.

The MPD is a pure function of a :class:`~sidecar.timeline.Presentation`: no clock, no
node identity, fixed attribute and element order, so every node that builds the same
model serves the same bytes (invariant 3).

Timing (DASH-IF "Guidelines-TimingModel"): ``availabilityStartTime`` is the Unix epoch,
``Period@start`` is the epoch's first slot start and, at ``timescale=90000``,
``presentationTimeOffset`` equals it, so media time, MPD time and grid time coincide.
Segments are addressed by ``$Time$`` from an explicit ``SegmentTimeline``; a hole (a slot
left out of the timeline) is the next ``S`` carrying its own ``@t``.

Durations are written in seconds rounded half up to 5 decimal places, trailing zeros
dropped: exact whenever the tick count is a multiple of 9 (any duration given as a decimal
with at most 4 places), otherwise within half a tick (11.1 us) of the true value.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

from sidecar.grid import format_program_date_time, format_seconds
from sidecar.model import TrackDesc
from sidecar.timeline import Entry, Period, Presentation

MPD_FILE = "manifest.mpd"
NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
PROFILES = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
TIMESCALE = 90_000
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
PERIOD_CONNECTIVITY = "urn:mpeg:dash:period-connectivity:2015"
CHANNEL_CONFIGURATION = "urn:mpeg:mpegB:cicp:ChannelConfiguration"

# Channel count -> CICP ChannelConfiguration index (ISO/IEC 23091-3; the inverse of the
# table Shaka Player's DashParser uses). Other counts have no unambiguous index.
CICP_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 11, 8: 7}
# Stable AdaptationSet@id per track kind: period connectivity needs matching ids.
_ADAPTATION_ID = {"video": 0, "audio": 1}
_MIME = {"video": "video/mp4", "audio": "audio/mp4"}


def init_path(kind: str, epoch: int) -> str:
    return f"{kind}/init-{epoch}.mp4"


def media_template(kind: str) -> str:
    return f"{kind}/t$Time$.m4s"


def media_path(kind: str, start: int) -> str:
    """The URL (relative to the MPD) a player builds for the segment starting at ``start``."""
    return f"{kind}/t{start}.m4s"


def render_mpd(p: Presentation, *, utc_timing_url: str) -> str:
    """The dynamic MPD of ``p``; ``utc_timing_url`` answers the time as ISO 8601 with ms.

    Raises ``ValueError`` for a presentation without periods: the schema requires at least
    one ``Period``, and there is nothing to play yet (the caller answers 404).
    """
    if not p.periods:
        raise ValueError("a presentation without periods has no MPD")
    longest = max([p.segment_duration] + [e.duration for q in p.periods for e in q.segments])
    mpd = ET.Element("MPD", {
        "xmlns": NAMESPACE,
        "type": "dynamic",
        "profiles": PROFILES,
        "availabilityStartTime": "1970-01-01T00:00:00Z",
        "publishTime": format_program_date_time(p.publish_time),
        "minimumUpdatePeriod": xs_duration(p.segment_duration),
        "timeShiftBufferDepth": xs_duration(p.time_shift_buffer),
        "suggestedPresentationDelay": xs_duration(p.suggested_delay),
        "minBufferTime": xs_duration(p.min_buffer_time),
        "maxSegmentDuration": xs_duration(longest),
    })
    bandwidth = dict(p.bandwidth)
    previous: Period | None = None
    for period in p.periods:
        mpd.append(_period(period, previous, bandwidth))
        previous = period
    # After the Periods: the schema's MPDtype sequence puts UTCTiming near the end.
    ET.SubElement(mpd, "UTCTiming", {"schemeIdUri": UTC_TIMING_SCHEME,
                                     "value": utc_timing_url})
    ET.indent(mpd, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"


def _period(period: Period, previous: Period | None, bandwidth: dict[str, int]) -> ET.Element:
    el = ET.Element("Period", {"id": period.id, "start": xs_duration(period.start)})
    for track in sorted(period.tracks, key=lambda t: _ADAPTATION_ID.get(t.kind, 99)):
        if track.init is None or track.kind not in _ADAPTATION_ID:
            continue
        el.append(_adaptation_set(period, track, _connected(previous, track),
                                  bandwidth.get(track.kind, 0)))
    return el


def _connected(previous: Period | None, track: TrackDesc) -> str | None:
    """``Period@id`` this track's adaptation set is period-connected to, if verifiable.

    DASH-IF timing model, "Period connectivity": the init segments of the matching
    representations must be functionally equivalent; ours are when they are the same
    bytes (same SHA-256). The sample timeline may jump across the boundary, as at every
    epoch change. Only the immediately preceding Period is considered.
    """
    if previous is None or track.init is None:
        return None
    before = next((t for t in previous.tracks if t.kind == track.kind), None)
    if before is None or before.init is None or before.init.sha256 != track.init.sha256:
        return None
    return previous.id


def _adaptation_set(period: Period, track: TrackDesc, connected_to: str | None,
                    bandwidth: int) -> ET.Element:
    kind = track.kind
    attrs = {
        "id": str(_ADAPTATION_ID[kind]),
        "contentType": kind,
        "mimeType": _MIME[kind],
        "segmentAlignment": "true",
        "startWithSAP": "1",
    }
    if kind == "video":
        if track.width and track.height:
            attrs["maxWidth"] = str(track.width)
            attrs["maxHeight"] = str(track.height)
        if track.frame_rate:
            attrs["maxFrameRate"] = track.frame_rate
    el = ET.Element("AdaptationSet", attrs)
    # RepresentationBaseType's children come first, in the schema's order.
    if kind == "audio" and track.channels in CICP_CHANNELS:
        ET.SubElement(el, "AudioChannelConfiguration", {
            "schemeIdUri": CHANNEL_CONFIGURATION, "value": str(CICP_CHANNELS[track.channels])})
    if connected_to is not None:
        ET.SubElement(el, "SupplementalProperty", {
            "schemeIdUri": PERIOD_CONNECTIVITY, "value": connected_to})
    template = ET.SubElement(el, "SegmentTemplate", {
        "timescale": str(TIMESCALE),
        "presentationTimeOffset": str(period.start),
        "initialization": init_path(kind, period.epoch),
        "media": media_template(kind),
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    for t, d, r in _runs(period.segments):
        s = {"t": str(t)} if t is not None else {}
        s["d"] = str(d)
        if r:
            s["r"] = str(r)
        ET.SubElement(timeline, "S", s)
    rep = {"id": kind, "bandwidth": str(max(bandwidth, 0)), "codecs": track.codec}
    if kind == "video":
        if track.width and track.height:
            rep["width"] = str(track.width)
            rep["height"] = str(track.height)
        if track.frame_rate:
            rep["frameRate"] = track.frame_rate
    elif track.sample_rate:
        rep["audioSamplingRate"] = str(track.sample_rate)
    ET.SubElement(el, "Representation", rep)
    return el


def _runs(segments: Iterable[Entry]) -> list[tuple[int | None, int, int]]:
    """``(t, d, r)`` per ``S``: ``t`` only where a run does not follow on from the last
    end (the first ``S`` and after a hole); ``r`` counts further equal, contiguous ones."""
    runs: list[tuple[int | None, int, int]] = []
    end: int | None = None
    for e in sorted(segments, key=lambda e: e.start):
        if e.gap or e.duration <= 0:
            continue
        if runs and e.start == end:
            t, d, r = runs[-1]
            if d == e.duration:
                runs[-1] = (t, d, r + 1)
            else:
                runs.append((None, e.duration, 0))
        else:
            runs.append((e.start, e.duration, 0))
        end = e.start + e.duration
    return runs


def xs_duration(ticks: int) -> str:
    """``xs:duration`` in seconds: ``PT6S``, ``PT3.2S``, ``PT0.03337S`` (5 places, half up)."""
    if ticks < 0:
        raise ValueError(f"negative duration: {ticks} ticks")
    text = format_seconds(ticks, 5)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"PT{text}S"
