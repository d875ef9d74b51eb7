"""Deterministic MPEG-TS segments with PyAV.

Every segment is one fresh, bitexact mux: fixed PIDs (0x100 + track index, video first),
continuity counters from zero with the discontinuity indicator set on each PID's first
packet (so demuxers do not report continuity errors across segments), and output
timestamps equal to grid ticks (``copyts``; the 33-bit wrap happens in the bit fields).
No wall-clock field is written, so the bytes depend only on the grid packets.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av

from sidecar.errors import SidecarError
from sidecar.model import GridPacket, TrackInfo

_TB = Fraction(1, 90_000)
MUX_OPTIONS = {
    "fflags": "+bitexact",
    "mpegts_flags": "+initial_discontinuity",
    "mpegts_copyts": "1",
}


class MuxError(SidecarError):
    """A segment could not be muxed."""


def mux_ts(tracks: Sequence[TrackInfo], packets: Sequence[GridPacket]) -> bytes:
    """Mux ``packets`` (grid ticks) into one MPEG-TS segment; tracks ordered by index."""
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="mpegts", options=dict(MUX_OPTIONS)) as out:
            streams = {}
            for t in sorted(tracks, key=lambda t: t.index):
                streams[t.index] = out.add_stream_from_template(t.template)
            for p in sorted(packets, key=lambda q: (q.dts, q.track)):
                stream = streams.get(p.track)
                if stream is None:
                    continue
                pkt = av.Packet(p.data)
                pkt.time_base = _TB
                pkt.pts = p.pts
                pkt.dts = p.dts
                pkt.duration = p.duration
                pkt.is_keyframe = p.keyframe
                pkt.stream = stream
                out.mux(pkt)
    except (av.FFmpegError, ValueError) as exc:
        raise MuxError(f"mpegts mux failed: {exc}") from exc
    return buf.getvalue()
