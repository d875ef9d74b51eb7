"""In-process feeds for pipeline simulations: real encoded packets, injected clock."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from sidecar.ingest.synthetic import (
    SyntheticConfig,
    encode_audio_block,
    encode_gop,
    make_templates,
)
from sidecar.model import InputOpened, RawPacket, TrackInfo

TB = Fraction(1, 90_000)
CFG = SyntheticConfig(fps=25, gop_seconds=2, width=160, height=96)
_TRACKS: tuple[TrackInfo, ...] | None = None


def tracks() -> tuple[TrackInfo, ...]:
    global _TRACKS
    if _TRACKS is None:
        _TRACKS = make_templates(CFG)
    return _TRACKS


def feed(seconds: int, *, first_gop: int = 0) -> list[RawPacket]:
    """``seconds`` of encoder output with input timestamps from 0 (like RTMP), in DTS
    order; arrival is left 0 for the caller to set."""
    gop_ticks = CFG.gop * CFG.frame_ticks
    origin = first_gop * gop_ticks
    out: list[RawPacket] = []
    for g in range(first_gop, first_gop + seconds // CFG.gop_seconds):
        for pts, dts, kf, data in encode_gop(CFG, g):
            out.append(RawPacket(0, pts - origin, dts - origin, CFG.frame_ticks, TB, kf, data, 0))
    end = seconds * 90_000
    a_origin = origin * 48_000 // 90_000
    b = a_origin // 1024 // 75
    while True:
        block = encode_audio_block(b)
        b += 1
        done = False
        for pts, data in block:
            t = (pts - a_origin) * 90_000 // 48_000
            if t >= end:
                done = True
                break
            if t >= 0:
                out.append(RawPacket(1, t, t, 1920, TB, True, data, 0))
        if done:
            break
    out.sort(key=lambda p: (p.dts, p.track))
    return out


def arrive(packets: list[RawPacket], wall0: int, latency: int = 0) -> list[RawPacket]:
    """Stamp arrival = wall0 + input time + latency (a live, real-time feed)."""
    return [replace(p, arrival=wall0 + (p.dts or 0) + latency) for p in packets]


def opened(arrival: int) -> InputOpened:
    return InputOpened(tracks(), None, arrival)
