"""First presented video and audio timestamps of a segment, read with PyAV (no decoding)."""

from __future__ import annotations

import io
from fractions import Fraction

import av

from sidecar.compare.model import Timing

TS_WRAP_MS = float(Fraction(2**33, 90_000) * 1000)
MAX_PACKETS = 20_000


def first_timestamps(data: bytes, init: bytes | None = None) -> Timing | None:
    """Earliest video and audio PTS in ``data`` (fMP4: prefixed with its ``init`` segment).

    The earliest PTS, not the first packet's: with B-frames the first frame shown is not the
    first one stored. None when PyAV cannot read the bytes.
    """
    try:
        with av.open(io.BytesIO((init or b"") + data), mode="r") as container:
            first: dict[str, Fraction] = {}
            frame_ms: float | None = None
            for stream in container.streams:
                if stream.type == "video" and frame_ms is None:
                    rate = stream.average_rate or stream.guessed_rate
                    frame_ms = float(1000 / rate) if rate else None
            for n, packet in enumerate(container.demux()):
                if n >= MAX_PACKETS:
                    break
                kind = packet.stream.type
                if packet.pts is None or kind not in ("video", "audio") or packet.time_base is None:
                    continue
                pts = packet.pts * packet.time_base * 1000
                if kind not in first or pts < first[kind]:
                    first[kind] = pts
            wrap = TS_WRAP_MS if container.format.name == "mpegts" else None
    except (av.FFmpegError, ValueError, OSError):
        return None
    video, audio = first.get("video"), first.get("audio")
    return Timing(float(video) if video is not None else None,
                  float(audio) if audio is not None else None, frame_ms, wrap)
