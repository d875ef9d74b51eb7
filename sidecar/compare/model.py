"""What a comparison run records: listings, instants, events, segment checks, the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sidecar.errors import SidecarError


class CompareError(SidecarError):
    """The comparison could not be made (exit code 2); the message names the URL and cause."""


# Event kinds, the hazards first. Every event makes the origins not interchangeable.
SEQUENCE_CONFLICT = "sequence_conflict"  # one sequence number, two URIs or discontinuities
SEQUENCE_BACKWARDS = "sequence_backwards"  # switching origin moves the live edge back
MISSING = "missing"  # a listed segment that an origin does not serve
BYTES_DIFFER = "bytes_differ"  # same name, different bytes
DRIFT = "drift"  # same name, different first video/audio timestamps
POLL_ERROR = "poll_error"  # an origin did not answer a poll with a playlist
VARIANTS_DIFFER = "variants_differ"  # multivariant playlists list different variant URIs

EVENT_KINDS = (SEQUENCE_CONFLICT, SEQUENCE_BACKWARDS, MISSING, BYTES_DIFFER, DRIFT,
               POLL_ERROR, VARIANTS_DIFFER)

# Pair states at one instant.
IDENTICAL = "identical"  # same model (see parse.py for what the model holds)
EDGE = "edge"  # same segments where both list them; the windows differ by one at an end
DIFFERENT = "different"

KIND_NAMES = {"hls-multivariant": "an HLS multivariant playlist",
              "hls-media": "an HLS media playlist", "dash": "a DASH MPD"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed segment (or init segment) of one track."""

    track: str  # "" for an HLS media playlist; the Representation for DASH
    seq: int  # media sequence number; DASH: $Number$, or $Time$ when addressed by time
    uri: str  # as listed (relative to the playlist URL when on the same host)
    duration: float  # seconds
    disc: str  # discontinuity sequence number (HLS) or Period id (DASH)
    pdt: datetime | None = None  # PROGRAM-DATE-TIME; dynamic DASH: the wall-clock start
    gap: bool = False
    init: str | None = None  # EXT-X-MAP / DASH initialization, resolved like ``uri``


@dataclass(frozen=True, slots=True)
class Listing:
    """One origin's media playlist or MPD at one instant, as compared."""

    kind: str  # "hls-media" or "dash"
    header: dict[str, str]
    entries: tuple[Entry, ...]
    target_duration: float
    live: bool


@dataclass(frozen=True, slots=True)
class Multivariant:
    """An HLS multivariant playlist: its variant URIs, in order."""

    variants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PairDiff:
    """Two origins' listings at one instant."""

    a: int
    b: int
    state: str  # IDENTICAL, EDGE or DIFFERENT
    fields: tuple[str, ...] = ()  # where they differ


@dataclass(frozen=True, slots=True)
class Instant:
    """One poll of every origin."""

    t: float  # seconds since the run started
    pairs: tuple[PairDiff, ...]
    errors: dict[int, str]  # origin -> why it gave no listing
    agree: bool  # every pair identical or edge, no error, no hazard active


@dataclass(frozen=True, slots=True)
class Event:
    """Something that makes the origins not interchangeable."""

    t: float
    kind: str
    origins: tuple[int, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class Timing:
    """First presented timestamps of a segment (PyAV), in milliseconds."""

    video_ms: float | None = None
    audio_ms: float | None = None
    frame_ms: float | None = None  # one video frame
    wrap_ms: float | None = None  # timestamp wrap period (MPEG-TS: 2^33 ticks)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One origin's answer for one segment."""

    status: int | None  # None: no HTTP answer
    error: str | None = None
    sha256: str | None = None
    etag: str | None = None
    size: int = 0
    timing: Timing | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """One segment name downloaded from every origin."""

    t: float  # when it was first listed (seconds since the run started)
    track: str
    name: str
    init: bool  # an init segment (bytes only, no timestamps)
    fetched: tuple[Fetched, ...]
    start: float | None  # program date time (HLS) or wall-clock start (DASH), run seconds
    bytes_equal: bool | None  # None: fewer than two origins served it
    etag_equal: bool | None  # None: not every serving origin sent an ETag
    video_offsets_ms: tuple[float | None, ...]  # per origin, from the first serving origin
    video_drift_ms: float | None
    video_drift_frames: float | None
    audio_drift_ms: float | None


@dataclass(frozen=True, slots=True)
class PairSummary:
    """One pair of origins over the run."""

    a: int
    b: int
    instants: int
    identical: int
    edge: int
    different: int
    fields: dict[str, int]  # where they differed: field -> instants


@dataclass(slots=True)
class Summary:
    """The figures of a run."""

    instants: int
    duration_s: float
    interrupted: bool
    shares: dict[str, float | None]
    differences: dict[str, int]  # field -> (instant, pair) count where it differed
    hazards: dict[str, int]  # event kind -> count
    first_divergence_s: float | None
    longest_agreement_s: float
    segments: dict[str, float | int | None]
    pairs: list[PairSummary] = field(default_factory=list)
    interchangeable: bool = False
    exit_code: int = 2
