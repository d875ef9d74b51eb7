"""A built-in test source: video with a visible frame counter and clock, plus a tone.

It is *clock-locked*: frame ``n`` is the ``n``-th frame since the Unix epoch and its
content, encoding and timestamps depend only on ``n``. Every GOP (and every audio block)
is encoded by a fresh encoder, so two nodes that run this source independently produce
identical packets, even when one of them starts later.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import av
import numpy as np

from sidecar.clock import Clock
from sidecar.codecs import annexb_nals, codec_string, frame_rate_string
from sidecar.errors import ConfigError
from sidecar.grid import TICKS_PER_SECOND
from sidecar.model import InputOpened, RawPacket, TrackInfo

_TB = Fraction(1, TICKS_PER_SECOND)
SAMPLE_RATE = 48_000
_AAC_FRAME = 1024
_AUDIO_BLOCK = 75  # AAC frames per independently encoded block (1.6 s)
_PREROLL = 2

# 3x5 bitmaps of the digits, colon and dot.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", ":": "000010000010000", ".": "000000000000010",
    " ": "000000000000000",
}


def _draw_text(y_plane: np.ndarray, text: str, x: int, y: int, scale: int) -> None:
    for ch in text:
        bits = _GLYPHS.get(ch, _GLYPHS[" "])
        for i, b in enumerate(bits):
            if b == "1":
                r, c = divmod(i, 3)
                rows = slice(y + r * scale, y + (r + 1) * scale)
                y_plane[rows, x + c * scale : x + (c + 1) * scale] = 235
        x += 4 * scale


@dataclass(frozen=True)
class SyntheticConfig:
    fps: int = 25
    gop_seconds: int = 2
    width: int = 640
    height: int = 360

    @property
    def gop(self) -> int:
        return self.fps * self.gop_seconds

    @property
    def frame_ticks(self) -> int:
        return TICKS_PER_SECOND // self.fps


def render_frame(cfg: SyntheticConfig, n: int) -> av.VideoFrame:
    """Frame ``n`` since the epoch: frame counter, UTC clock and a moving bar."""
    w, h = cfg.width, cfg.height
    y = np.full((h, w), 40, np.uint8)
    bar = (n % cfg.fps) * w // cfg.fps
    y[h - 24 : h - 8, bar : bar + w // cfg.fps] = 200
    seconds = n // cfg.fps
    clock = time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{n % cfg.fps:02d}"
    scale = max(2, w // 120)
    _draw_text(y, clock, 16, 16, scale)
    _draw_text(y, str(n % 10_000_000), 16, 16 + 7 * scale, scale)
    uv = np.full((h // 2, w), 128, np.uint8)
    uv[:, : w // 2] = 128 + (seconds % 16) * 4  # U drifts slowly: visible motion
    frame = av.VideoFrame.from_ndarray(np.vstack([y, uv]), format="yuv420p")
    return frame


def tone(start_sample: int, count: int) -> np.ndarray:
    """440 Hz, with a 1 kHz beep in the first 100 ms of every second (exact phase)."""
    n = (np.arange(count, dtype=np.int64) + start_sample) % SAMPLE_RATE
    base = 0.1 * np.sin(2 * np.pi * 440 * n / SAMPLE_RATE)
    beep = np.where(n < SAMPLE_RATE // 10, 0.2 * np.sin(2 * np.pi * 1000 * n / SAMPLE_RATE), 0)
    return (base + beep).astype(np.float32)


def _video_encoder(cfg: SyntheticConfig) -> tuple[Any, Any]:
    out = av.open(io.BytesIO(), "w", format="mpegts")
    s = out.add_stream("libx264", rate=cfg.fps)
    s.width, s.height, s.pix_fmt = cfg.width, cfg.height, "yuv420p"
    s.time_base = Fraction(1, cfg.fps)
    s.codec_context.options = {
        "preset": "ultrafast", "tune": "zerolatency", "threads": "1", "bf": "0",
        "g": str(cfg.gop), "keyint_min": str(cfg.gop), "sc_threshold": "0", "qp": "28",
    }
    return out, s


def _audio_encoder() -> tuple[Any, Any]:
    # An MP4 holder makes the encoder export its AudioSpecificConfig as extradata, which
    # the TS muxer needs to write ADTS headers.
    out = av.open(io.BytesIO(), "w", format="mp4")
    s = out.add_stream("aac", rate=SAMPLE_RATE)
    s.layout = "stereo"
    s.bit_rate = 96_000
    s.time_base = Fraction(1, SAMPLE_RATE)
    return out, s


def encode_gop(cfg: SyntheticConfig, g: int) -> list[tuple[int, int, bool, bytes]]:
    """Video packets of GOP ``g`` as (pts ticks, dts ticks, keyframe, data)."""
    _, s = _video_encoder(cfg)
    out = []
    first = g * cfg.gop
    for i in range(cfg.gop):
        frame = render_frame(cfg, first + i)
        frame.pts = i
        frame.time_base = Fraction(1, cfg.fps)
        for p in s.encode(frame):
            out.append(p)
    out.extend(s.encode(None))
    return [((first + p.pts) * cfg.frame_ticks, (first + p.dts) * cfg.frame_ticks,
             bool(p.is_keyframe), bytes(p)) for p in out]


def encode_audio_block(b: int) -> list[tuple[int, bytes]]:
    """AAC packets of block ``b`` as (pts in samples since the epoch, data)."""
    _, s = _audio_encoder()
    first = b * _AUDIO_BLOCK
    packets = []
    for j in range(first - _PREROLL, first + _AUDIO_BLOCK + _PREROLL):
        samples = tone(j * _AAC_FRAME, _AAC_FRAME)
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp",
                                           layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = (j - first + _PREROLL) * _AAC_FRAME
        frame.time_base = Fraction(1, SAMPLE_RATE)
        packets.extend(s.encode(frame))
    packets.extend(s.encode(None))
    base = (first - _PREROLL) * _AAC_FRAME
    lo, hi = first * _AAC_FRAME, (first + _AUDIO_BLOCK) * _AAC_FRAME
    return [(base + p.pts, bytes(p)) for p in packets
            if p.pts is not None and lo <= base + p.pts < hi]


def make_templates(cfg: SyntheticConfig) -> tuple[TrackInfo, ...]:
    """Codec parameters for the muxer, from one throwaway encode."""
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    _, vs = _video_encoder(cfg)
    frame = render_frame(cfg, 0)
    frame.pts = 0
    first = b"".join(bytes(p) for p in [*vs.encode(frame), *vs.encode(None)])
    vt = holder.add_stream_from_template(vs)
    # The encoder repeats SPS/PPS in-band (no global header); give the template them as
    # Annex B extradata too, so a CMAF init segment can be written before any keyframe.
    vt.codec_context.extradata = b"".join(
        b"\x00\x00\x00\x01" + nal for nal in annexb_nals(first) if nal[0] & 0x1F in (7, 8))
    aout, as_ = _audio_encoder()
    silence = av.AudioFrame.from_ndarray(np.zeros((2, _AAC_FRAME), np.float32), format="fltp",
                                         layout="stereo")
    silence.sample_rate = SAMPLE_RATE
    silence.pts = 0
    list(as_.encode(silence))
    extradata = bytes(as_.codec_context.extradata or b"")
    # Writing the throwaway header copies the opened encoder's parameters (with its
    # extradata) into the stream, where templates take them from.
    aout.start_encoding()
    at = holder.add_stream_from_template(as_)
    return (
        TrackInfo(0, "video", "h264", codec_string("h264", None, first), width=cfg.width,
                  height=cfg.height, frame_rate=frame_rate_string(cfg.fps), template=vt),
        TrackInfo(1, "audio", "aac", codec_string("aac", extradata),
                  sample_rate=SAMPLE_RATE, channels=2, template=at),
    )


class SyntheticConnection:
    def __init__(self, cfg: SyntheticConfig, clock: Clock, stop: threading.Event,
                 tracks: tuple[TrackInfo, ...]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.stop = stop
        self.opened = InputOpened(tracks, None, clock.now())

    def packets(self) -> Iterator[RawPacket]:
        cfg = self.cfg
        gop_ticks = cfg.gop * cfg.frame_ticks
        start = self.clock.now()
        g = start // gop_ticks
        b = start * SAMPLE_RATE // TICKS_PER_SECOND // _AAC_FRAME // _AUDIO_BLOCK
        video: list[RawPacket] = []
        audio: list[RawPacket] = []
        frame_dur = cfg.frame_ticks
        audio_dur = _AAC_FRAME * TICKS_PER_SECOND // SAMPLE_RATE
        while not self.stop.is_set():
            if not video:
                video = [RawPacket(0, pts, dts, frame_dur, _TB, kf, data, 0)
                         for pts, dts, kf, data in encode_gop(cfg, g)]
                g += 1
            if not audio:
                audio = [RawPacket(1, pts * TICKS_PER_SECOND // SAMPLE_RATE,
                                   pts * TICKS_PER_SECOND // SAMPLE_RATE, audio_dur, _TB, True,
                                   data, 0)
                         for pts, data in encode_audio_block(b)]
                b += 1
            nxt = video if video[0].dts is not None and (
                audio[0].dts is None or video[0].dts <= audio[0].dts) else audio
            p = nxt.pop(0)
            assert p.dts is not None
            if p.dts < start:
                continue  # before we joined
            now = self.clock.now()
            while p.dts > now and not self.stop.is_set():
                time.sleep(min((p.dts - now) / TICKS_PER_SECOND, 0.2))
                now = self.clock.now()
            yield RawPacket(p.track, p.pts, p.dts, p.duration, _TB, p.keyframe, p.data, now)

    def close(self) -> None:
        pass


class SyntheticSource:
    description = "synthetic test source"

    def __init__(self, cfg: SyntheticConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self._tracks: tuple[TrackInfo, ...] | None = None

    @classmethod
    def from_url(cls, url: str, clock: Clock) -> SyntheticSource:
        """``synthetic:?fps=25&gop=2&size=640x360``."""
        query = dict(parse_qsl(urlsplit(url).query))
        try:
            w, h = (int(x) for x in query.get("size", "640x360").split("x"))
            cfg = SyntheticConfig(int(query.get("fps", 25)), int(query.get("gop", 2)), w, h)
        except ValueError as exc:
            raise ConfigError(f"bad synthetic source options in {url!r}: {exc}") from exc
        if TICKS_PER_SECOND % cfg.fps or w % 2 or h % 2:
            raise ConfigError(f"synthetic source needs fps dividing 90000 and even size: {url}")
        return cls(cfg, clock)

    def connect(self, stop: threading.Event) -> SyntheticConnection:
        if self._tracks is None:
            self._tracks = make_templates(self.cfg)
        return SyntheticConnection(self.cfg, self.clock, stop, self._tracks)
