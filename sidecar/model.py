"""Typed records that flow through the pipeline, from ingest to the playlists."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

Kind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One elementary stream of an input connection, with what the muxer needs to copy it."""

    index: int
    kind: Kind
    codec: str
    codec_string: str
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    # Nominal frame rate (``"25"``, ``"30000/1001"``) for FRAME-RATE and DASH @frameRate.
    frame_rate: str = ""
    # A PyAV stream that holds the codec parameters (extradata etc.), owned by a
    # never-written holder container so it outlives the input connection.
    template: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class InputOpened:
    """A connection to the input is up; its tracks are known."""

    tracks: tuple[TrackInfo, ...]
    wrap_bits: int | None
    arrival: int


@dataclass(frozen=True, slots=True)
class RawPacket:
    """A demuxed packet in its input time base, stamped with its wall-clock arrival (ticks)."""

    track: int
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    keyframe: bool
    data: bytes
    arrival: int


@dataclass(frozen=True, slots=True)
class InputClosed:
    """The connection ended (EOF, timeout or error); the reader will reconnect."""

    reason: str
    error: bool = True


@dataclass(frozen=True, slots=True)
class GridPacket:
    """A packet placed on the grid: timestamps are grid ticks since the Unix epoch."""

    track: int
    kind: Kind
    pts: int
    dts: int
    duration: int
    keyframe: bool
    data: bytes

    @property
    def end(self) -> int:
        return self.pts + self.duration


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a segment or of an epoch's init: which output it is, its hash and size.

    Names: ``ts`` (the MPEG-TS segment), ``video`` and ``audio`` (CMAF tracks).
    """

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class TrackDesc:
    """What the manifests need of one track, fixed for an epoch.

    ``init`` is the track's CMAF init segment as the epoch's creator muxed it (every node
    serves exactly those bytes); ``None`` with ``unsupported`` set when the codec cannot go
    into CMAF.
    """

    kind: Kind
    codec: str
    width: int = 0
    height: int = 0
    frame_rate: str = ""
    sample_rate: int = 0
    channels: int = 0
    init: Part | None = None
    unsupported: str = ""


@dataclass(frozen=True, slots=True)
class Epoch:
    """A continuous run of input timestamps and the one anchor every node uses for it.

    ``grid = anchor + input_ticks``. ``lead`` is how far the anchor put grid time ahead of
    the creating node's wall clock (epochs start on a slot boundary), so that a later
    joiner can still predict arrival times.
    """

    stream: str
    index: int
    anchor: int
    t0: int
    lead: int
    created_at: int
    node: str
    codecs: str = ""
    resolution: str = ""
    tracks: tuple[TrackDesc, ...] = ()

    def track(self, kind: Kind) -> TrackDesc | None:
        return next((t for t in self.tracks if t.kind == kind), None)

    def grid(self, t: int) -> int:
        return self.anchor + t

    def expected_arrival(self, t: int) -> int:
        return self.anchor + t - self.lead


@dataclass(frozen=True, slots=True)
class Cut:
    """A finished segment from the segmenter: its slot number, span and packets."""

    number: int
    start: int
    end: int
    packets: tuple[GridPacket, ...]

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """What the timeline knows of one published segment (first writer wins)."""

    stream: str
    number: int
    epoch: int
    start: int
    duration: int
    parts: tuple[Part, ...]
    available_at: int
    node: str

    @property
    def end(self) -> int:
        return self.start + self.duration

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)
