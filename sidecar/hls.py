"""Render HLS playlists from the timeline model, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.grid import format_program_date_time, format_seconds
from sidecar.timeline import MediaPlaylist

MEDIA_PLAYLIST = "media.m3u8"
MULTIVARIANT_PLAYLIST = "playlist.m3u8"
RENDITION = "src"


def segment_uri(number: int, ext: str = "ts") -> str:
    return f"{number}.{ext}"


def render_media(pl: MediaPlaylist, ext: str = "ts") -> str:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{pl.target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{pl.media_sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{pl.discontinuity_sequence}",
    ]
    if pl.ended:
        lines.insert(2, "#EXT-X-PLAYLIST-TYPE:VOD")
    for e in pl.entries:
        if e.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
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


def render_multivariant(variants: list[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    for v in variants:
        attrs = [f"BANDWIDTH={v.bandwidth}"]
        if v.codecs:
            attrs.append(f'CODECS="{v.codecs}"')
        if v.resolution:
            attrs.append(f"RESOLUTION={v.resolution}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"
