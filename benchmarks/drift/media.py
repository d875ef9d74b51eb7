"""Which encoder frame does a segment start with? Frame identity, independent of timestamps.

Every packager rewrites timestamps its own way (the sidecar onto its wall-clock grid,
FFmpeg's HLS muxer with its own offset, nginx-rtmp per connection), but none of them
touches the coded picture: the first VCL NAL unit (the slice data) of a video frame is the
same bytes in the encoder's FLV output and in every packager's MPEG-TS segment, whatever
the framing (AVCC length prefixes in FLV, Annex B start codes in TS, SPS/PPS/AUD added).

So the encoder also writes what it publishes to a local FLV file (``tee`` muxer), one file
per encoder session. :class:`Reference` indexes those files: hash of the first VCL NAL of
every video frame -> (session, PTS). A segment's start is then the encoder PTS of its first
video frame, on one timeline for the whole scenario (``session offset + PTS``).

The test pattern marks each encoder session with its own colour (a small box), so its
pictures never repeat. With ``--source`` a looped file repeats its pictures: occurrences are
then told apart by when the segment was first seen (the last occurrence sent before that),
which is right unless a packager lists a segment later than one loop after it began.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

_H264_VCL = range(1, 6)
_HEVC_VCL = range(0, 32)


def _vcl(codec: str, nal: bytes) -> bool:
    if not nal:
        return False
    if codec == "hevc":
        return (nal[0] >> 1) & 0x3F in _HEVC_VCL
    return nal[0] & 0x1F in _H264_VCL


def annexb_nals(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream on start codes (00 00 01 / 00 00 00 01)."""
    out: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        nal = data[start:] if j < 0 else data[start:j]
        # A NAL unit never ends in a zero byte: zeros before the next start code belong
        # to that start code (4-byte form) or are trailing_zero_8bits.
        out.append(nal.rstrip(b"\x00"))
        i = j
    return out


def avcc_nals(data: bytes, length_size: int) -> list[bytes]:
    """Split length-prefixed NAL units (FLV / MP4 framing)."""
    out: list[bytes] = []
    i = 0
    for _ in range(10_000):
        if i + length_size > len(data):
            break
        n = int.from_bytes(data[i:i + length_size], "big")
        i += length_size
        out.append(data[i:i + n])
        i += n
    return out


def frame_id(codec: str, data: bytes, length_size: int | None) -> str | None:
    """Hash of the first VCL NAL unit of one coded frame (None if there is none)."""
    if length_size is None or data[:4] in (b"\x00\x00\x00\x01",) or data[:3] == b"\x00\x00\x01":
        nals = annexb_nals(data)
    else:
        nals = avcc_nals(data, length_size)
    for nal in nals:
        if _vcl(codec, nal):
            return hashlib.sha1(nal).hexdigest()[:20]
    return None


def _length_size(codec: str, extradata: bytes | None) -> int | None:
    """NAL length prefix size from avcC/hvcC extradata, None for Annex B extradata."""
    if not extradata or extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01":
        return None
    if codec == "hevc":
        return (extradata[21] & 3) + 1 if len(extradata) > 21 else 4
    return (extradata[4] & 3) + 1 if len(extradata) > 4 else 4


@dataclass(frozen=True, slots=True)
class SegmentMedia:
    """What a segment holds: the first video frame's identity, frame and audio counts."""

    first_frame: str | None
    video_frames: int
    keyframe_first: bool


def inspect_segment(data: bytes, init: bytes | None = None) -> SegmentMedia:
    """Demux a segment (in memory) and identify its first video frame.

    ``init``: the CMAF init segment the (fMP4) segment belongs to; without it the segment
    is MPEG-TS.
    """
    try:
        blob, fmt = (init + data, "mp4") if init is not None else (data, "mpegts")
        with av.open(io.BytesIO(blob), mode="r", format=fmt) as c:
            if not c.streams.video:
                return SegmentMedia(None, 0, False)
            vs = c.streams.video[0]
            codec = vs.codec_context.name
            lsize = (_length_size(codec, bytes(vs.codec_context.extradata or b""))
                     if init is not None else None)
            first: str | None = None
            key = False
            frames = 0
            for pkt in c.demux(vs):
                if pkt.size == 0:
                    continue
                frames += 1
                if first is None:
                    first = frame_id(codec, bytes(pkt), lsize)
                    key = bool(pkt.is_keyframe)
            return SegmentMedia(first, frames, key)
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.warning("cannot demux segment (%d bytes): %s", len(data), exc)
        return SegmentMedia(None, 0, False)


@dataclass(frozen=True, slots=True)
class Occurrence:
    session: int
    pts_ms: float       # in the session's own timestamps
    timeline_ms: float  # session offset + pts: one timeline for the whole scenario
    wall: float         # approximate send time (session start + pts), for disambiguation


class Reference:
    """Index of every video frame the encoder published, from its per-session FLV files."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[Occurrence]] = {}
        self.frame_ms: float = 40.0
        self.frames = 0
        self.sessions: list[tuple[float, Path]] = []
        self.duplicates = 0

    @classmethod
    def load(cls, sessions: list[tuple[float, Path]]) -> Reference:
        """``sessions``: (wall-clock start in s, FLV path) per encoder start, in order."""
        ref = cls()
        ref.sessions = list(sessions)
        if not sessions:
            return ref
        wall0 = sessions[0][0]
        deltas: list[float] = []
        for index, (wall, path) in enumerate(sessions):
            offset_ms = (wall - wall0) * 1000.0
            seen: set[str] = set()
            try:
                container = av.open(str(path))
            except (av.FFmpegError, OSError) as exc:
                log.warning("reference %s unreadable: %s", path, exc)
                continue
            with container:
                if not container.streams.video:
                    continue
                vs = container.streams.video[0]
                codec = vs.codec_context.name
                lsize = _length_size(codec, bytes(vs.codec_context.extradata or b""))
                last_dts: float | None = None
                try:
                    for pkt in container.demux(vs):
                        if pkt.size == 0 or pkt.pts is None:
                            continue
                        fid = frame_id(codec, bytes(pkt), lsize)
                        if fid is None:
                            continue
                        tb = pkt.time_base or Fraction(1, 1000)
                        pts_ms = float(pkt.pts * tb * 1000)
                        if pkt.dts is not None:
                            dts_ms = float(pkt.dts * tb * 1000)
                            if last_dts is not None and 0 < dts_ms - last_dts < 1000:
                                deltas.append(dts_ms - last_dts)
                            last_dts = dts_ms
                        if fid in seen:
                            ref.duplicates += 1
                        seen.add(fid)
                        occ = Occurrence(index, pts_ms, offset_ms + pts_ms, wall + pts_ms / 1000)
                        ref.by_id.setdefault(fid, []).append(occ)
                        ref.frames += 1
                except (av.FFmpegError, EOFError) as exc:  # a killed encoder truncates it
                    log.info("reference %s ends early: %s", path.name, exc)
        if deltas:
            deltas.sort()
            ref.frame_ms = deltas[len(deltas) // 2]
        for occs in ref.by_id.values():
            occs.sort(key=lambda o: o.wall)
        return ref

    def locate(self, fid: str | None, seen_wall: float, slack: float = 2.0) -> Occurrence | None:
        """The occurrence of frame ``fid`` sent last before the segment was seen."""
        if fid is None:
            return None
        occs = self.by_id.get(fid)
        if not occs:
            return None
        walls = [o.wall for o in occs]
        i = bisect.bisect_right(walls, seen_wall + slack)
        return occs[i - 1] if i > 0 else occs[0]
