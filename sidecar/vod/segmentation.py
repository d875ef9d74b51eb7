"""The VOD segmentation rule: a pure function of a file's packet index and ``D``.

The live rule (``sidecar.segmenter``) applied to a whole file at once, in grid ticks:

* The *driver* is the video track (the audio track for audio-only files, every frame of
  which is a keyframe). Segment boundaries are driver keyframes, in decode order: the
  first keyframe of the file, then each keyframe whose slot ``floor(pts / D)`` is greater
  than the slot of the previous boundary. So a segment starts at the first keyframe with
  ``pts >= k*D`` for every slot ``k`` that holds a keyframe.
* A slot without a keyframe (a GOP longer than D) does not start a segment: its media
  stays in the segment before it, which is then longer than D. Every segment therefore
  starts with a keyframe (independently decodable, DASH ``startWithSAP=1``); there are no
  soft cuts and no empty segments.
* Segments are numbered contiguously 0..n-1 in time order. HLS media sequence numbers are
  positional anyway, DASH can use ``$Number$`` with a ``SegmentTimeline``, and the
  numbering is still the same on every node because it is a pure function of the index.
* Driver packets belong to the boundary at or before them in decode order (so leading
  B-frames of an open GOP follow their keyframe); driver packets before the first
  keyframe cannot be decoded and are not served. Other tracks (audio) are assigned by
  their own PTS to ``[start, next_start)``; audio before the first boundary goes to
  segment 0 and audio after the last boundary to the last segment, so nothing (not the
  AAC priming frame either) is lost.
* Segment ``i`` spans ``[start_i, start_{i+1})``; the last one ends where its media ends
  (max PTS + duration of its packets): it is as short as the file makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Span:
    number: int
    start: int
    end: int

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """The cut of one file: spans, and for every index row its segment (-1: not served)."""

    segment_duration: int
    spans: tuple[Span, ...]
    segment: np.ndarray

    def rows(self, number: int) -> np.ndarray:
        """Index rows of segment ``number``, in demux order."""
        return np.flatnonzero(self.segment == number)

    @property
    def dropped(self) -> int:
        return int(np.count_nonzero(self.segment < 0))


def plan(track: np.ndarray, pts: np.ndarray, duration: np.ndarray, keyframe: np.ndarray,
         *, driver: int, segment_duration: int) -> Plan:
    """Cut packets (arrays in demux order) into segments of nominal length ``segment_duration``.

    ``track`` says which track each packet is on; ``driver`` is the track cut on.
    Raises ``ValueError`` when the driver track has no keyframe.
    """
    if segment_duration <= 0:
        raise ValueError("segment duration must be positive")
    track = np.asarray(track)
    pts = np.asarray(pts, np.int64)
    duration = np.asarray(duration, np.int64)
    keyframe = np.asarray(keyframe, np.bool_)
    drv = np.flatnonzero(track == driver)
    keys = drv[keyframe[drv]]
    if not len(keys):
        raise ValueError("the driver track has no keyframe")
    slots = pts[keys] // segment_duration
    before = np.maximum.accumulate(slots)
    new = np.concatenate([[True], slots[1:] > before[:-1]])
    bounds = keys[new]  # rows of the boundary keyframes, in decode order
    starts = pts[bounds]
    segment = np.full(len(track), -1, np.int64)
    # Driver packets: the last boundary at or before them in decode order.
    segment[drv] = np.searchsorted(bounds, drv, side="right") - 1
    # Other tracks: by their own PTS; before the first start -> 0, after the last -> last.
    rest = np.flatnonzero(track != driver)
    if len(rest):
        found = np.searchsorted(starts, pts[rest], side="right") - 1
        segment[rest] = np.clip(found, 0, len(starts) - 1)
    served = segment >= 0
    last_end = int(np.max(pts[served] + np.maximum(duration[served], 0)))
    ends = [*starts[1:].tolist(), max(last_end, int(starts[-1]) + 1)]
    spans = tuple(Span(i, int(s), int(e)) for i, (s, e) in enumerate(
        zip(starts.tolist(), ends, strict=True)))
    segment.setflags(write=False)
    return Plan(segment_duration, spans, segment)
