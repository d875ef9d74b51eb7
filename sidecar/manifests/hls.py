"""Render HLS playlists from the timeline model, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from sidecar.grid import format_program_date_time, format_seconds
from sidecar.timeline import MediaPlaylist

MEDIA_PLAYLIST = "media.m3u8"
MULTIVARIANT_PLAYLIST = "playlist.m3u8"
CMAF_PLAYLIST = "cmaf.m3u8"
RENDITION = "src"


def segment_uri(number: int, ext: str = "ts") -> str:
    return f"{number}.{ext}"


def init_uri(epoch: int) -> str:
    return f"init-{epoch}.mp4"


def render_media(pl: MediaPlaylist, ext: str = "ts",
                 init: Callable[[int], str] | None = None, *,
                 program_date_time: bool = True) -> str:
    """A media playlist. ``init`` (fMP4): the init segment URI of an epoch, written as
    ``EXT-X-MAP`` before the first segment and after every discontinuity.
    ``program_date_time``: False for files, whose segments have no wall-clock time."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if init else 3}",
        f"#EXT-X-TARGETDURATION:{pl.target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{pl.media_sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{pl.discontinuity_sequence}",
    ]
    if pl.ended:
        lines.insert(2, "#EXT-X-PLAYLIST-TYPE:VOD")
    for i, e in enumerate(pl.entries):
        if e.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if init is not None and (i == 0 or e.discontinuity):
            lines.append(f'#EXT-X-MAP:URI="{init(e.epoch)}"')
        if program_date_time:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(e.start)}")
        lines.append(f"#EXTINF:{format_seconds(e.duration)},")
        if e.gap:
            lines.append("#EXT-X-GAP")
        lines.append(segment_uri(e.number, ext))
    if pl.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth: int
    codecs: str = ""
    resolution: str = ""
    average_bandwidth: int = 0
    frame_rate: str = ""  # "25", "30000/1001"
    audio: str = ""  # GROUP-ID of the audio rendition


@dataclass(frozen=True, slots=True)
class AudioRendition:
    uri: str
    group: str = "audio"
    name: str = "audio"
    channels: int = 0


def _frame_rate(rate: str) -> str:
    """HLS FRAME-RATE: decimal with three places (``30000/1001`` -> ``29.970``)."""
    num, _, den = rate.partition("/")
    return format_seconds(int(Fraction(int(num), int(den or 1)) * 90_000), 3) if rate else ""


def render_multivariant(variants: list[Variant], audio: list[AudioRendition] | None = None,
                        version: int = 3) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}"]
    for a in audio or []:
        attrs = [f'TYPE=AUDIO,GROUP-ID="{a.group}",NAME="{a.name}",DEFAULT=YES,AUTOSELECT=YES']
        if a.channels:
            attrs.append(f'CHANNELS="{a.channels}"')
        attrs.append(f'URI="{a.uri}"')
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    for v in variants:
        attrs = [f"BANDWIDTH={v.bandwidth}"]
        if v.average_bandwidth:
            attrs.append(f"AVERAGE-BANDWIDTH={v.average_bandwidth}")
        if v.codecs:
            attrs.append(f'CODECS="{v.codecs}"')
        if v.resolution:
            attrs.append(f"RESOLUTION={v.resolution}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={_frame_rate(v.frame_rate)}")
        if v.audio:
            attrs.append(f'AUDIO="{v.audio}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"
