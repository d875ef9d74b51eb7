"""Inputs demuxed with PyAV: RTMP pull or listen, MPEG-TS over UDP/TCP/HTTP/SRT, files."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import av

from sidecar.clock import Clock
from sidecar.codecs import codec_string, frame_rate_string
from sidecar.errors import ConfigError, InputError
from sidecar.model import InputOpened, RawPacket, TrackInfo

log = logging.getLogger(__name__)

_MAX_BAD_PACKETS = 50
_WRAP_BITS = {"flv": 32, "live_flv": 32, "mpegts": 33}
_VIDEO_CODECS = {"h264", "hevc"}
_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3"}


def _why(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without the errno noise."""
    text = getattr(exc, "strerror", None) or str(exc)
    return "read timeout" if text == "Immediate exit requested" else text


def _codec(stream: Any) -> str:
    """The codec's canonical name (``mp3``), not its decoder's (``mp3float``)."""
    ctx = stream.codec_context
    return str(ctx.codec.canonical_name) if ctx is not None else "?"


def make_tracks(streams: list[Any]) -> tuple[tuple[TrackInfo, ...], dict[int, int]]:
    """Pick the first video and first audio stream; copy their codec parameters.

    Returns the tracks (video = 0, audio = next) and a map from input stream index to
    track index. Templates live in a holder container that is never written, so they
    outlive the input connection.
    """
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    tracks: list[TrackInfo] = []
    mapping: dict[int, int] = {}
    video = next((s for s in streams if s.type == "video" and s.codec_context
                  and _codec(s) in _VIDEO_CODECS), None)
    audio = next((s for s in streams if s.type == "audio" and s.codec_context
                  and _codec(s) in _AUDIO_CODECS), None)
    for s in (video, audio):
        if s is None:
            continue
        ctx = s.codec_context
        index = len(tracks)
        template = holder.add_stream_from_template(s)
        extradata = bytes(ctx.extradata) if ctx.extradata else None
        if s.type == "video":
            rate = s.average_rate or s.guessed_rate
            tracks.append(TrackInfo(index, "video", _codec(s), codec_string(_codec(s), extradata),
                                    width=ctx.width, height=ctx.height,
                                    frame_rate=frame_rate_string(rate), template=template))
        else:
            tracks.append(TrackInfo(index, "audio", _codec(s), codec_string(_codec(s), extradata),
                                    sample_rate=ctx.sample_rate, channels=ctx.channels,
                                    template=template))
        mapping[s.index] = index
    if not tracks:
        kinds = ", ".join(f"{s.type}/{_codec(s)}"
                          for s in streams) or "none"
        raise InputError(f"no supported audio or video stream (found: {kinds})")
    return tuple(tracks), mapping


@dataclass
class PyAVConnection:
    container: Any
    opened: InputOpened
    mapping: dict[int, int]
    clock: Clock
    pace: bool
    stop: threading.Event

    def packets(self) -> Iterator[RawPacket]:
        streams = [self.container.streams[i] for i in self.mapping]
        bad = 0
        wall0: int | None = None
        ts0: Fraction | None = None
        while not self.stop.is_set():
            demux = self.container.demux(streams)
            try:
                for pkt in demux:
                    if pkt.size == 0 or (pkt.dts is None and pkt.pts is None):
                        continue  # flush packets and packets without any timestamp
                    if pkt.is_corrupt:
                        bad += 1
                        log.debug("skipping corrupt packet on stream %d", pkt.stream_index)
                        continue
                    bad = 0
                    tb = pkt.time_base
                    now = self.clock.now()
                    if self.pace:
                        ref = pkt.dts if pkt.dts is not None else pkt.pts
                        t = ref * tb
                        if wall0 is None or ts0 is None:
                            wall0, ts0 = now, t
                        due = wall0 + int((t - ts0) * 90_000)
                        while due > now and not self.stop.is_set():
                            time.sleep(min((due - now) / 90_000, 0.5))
                            now = self.clock.now()
                    yield RawPacket(
                        track=self.mapping[pkt.stream_index],
                        pts=pkt.pts,
                        dts=pkt.dts,
                        duration=pkt.duration or 0,
                        time_base=tb,
                        keyframe=pkt.is_keyframe,
                        data=bytes(pkt),
                        arrival=now,
                    )
                    if self.stop.is_set():
                        return
                return  # demux ended: EOF
            except av.error.EOFError:
                return
            except BlockingIOError:
                continue  # EAGAIN: try again
            except av.error.InvalidDataError as exc:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise InputError(f"too much invalid data: {exc}") from exc
                log.warning("invalid data in input, skipping: %s", exc)
                continue
            except av.FFmpegError as exc:
                raise InputError(f"read failed: {_why(exc)}") from exc

    def close(self) -> None:
        try:
            self.container.close()
        except av.FFmpegError:
            pass


class PyAVSource:
    """Any input FFmpeg can demux. Query options on the URL control us, not FFmpeg:

    ``listen=1`` (RTMP/TCP push target), ``realtime=1`` (pace a file), ``loop=1``.
    """

    def __init__(self, url: str, clock: Clock, *, open_timeout: float, read_timeout: float,
                 fmt: str | None = None, options: dict[str, str] | None = None,
                 realtime: bool = False) -> None:
        self.url = url
        self.clock = clock
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.fmt = fmt
        self.options = options or {}
        self.realtime = realtime
        self.description = url

    @classmethod
    def from_url(cls, url: str, clock: Clock, *, open_timeout: float,
                 read_timeout: float) -> PyAVSource:
        parts = urlsplit(url)
        ours = {"listen", "realtime", "loop", "format"}
        query = parse_qsl(parts.query, keep_blank_values=True)
        mine = {k: v for k, v in query if k in ours}
        rest = "&".join(f"{k}={v}" if v else k for k, v in query if k not in ours)
        options: dict[str, str] = {}
        scheme = parts.scheme.lower()
        is_file = scheme in ("", "file")
        if scheme in ("rtmp", "rtmps") and mine.get("listen") in ("1", "true"):
            options["listen"] = "1"
        elif scheme == "rtmp":
            options["rtmp_live"] = "live"
        if scheme in ("tcp", "srt") and mine.get("listen") in ("1", "true"):
            options["listen"] = "1"
        if scheme == "udp":
            options.setdefault("fifo_size", "1000000")
            options.setdefault("overrun_nonfatal", "1")
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        if is_file:
            target = parts.path if scheme == "file" else url.split("?", 1)[0]
            if not Path(target).exists():
                raise ConfigError(f"input file {target} does not exist")
        loop = mine.get("loop") in ("1", "true")
        fmt = mine.get("format") or (None if is_file or scheme not in ("udp", "tcp", "srt")
                                     else "mpegts")
        src = cls(target, clock, open_timeout=open_timeout, read_timeout=read_timeout,
                  fmt=fmt, options=options,
                  realtime=is_file and mine.get("realtime", "1") in ("1", "true"))
        if is_file and loop:
            from sidecar.ingest.looping import LoopingSource

            return LoopingSource(src)  # type: ignore[return-value]
        return src

    def connect(self, stop: threading.Event) -> PyAVConnection:
        arrival = self.clock.now()
        try:
            # ``timeout`` installs an interrupt callback: it bounds the open and every read.
            container = av.open(self.url, mode="r", format=self.fmt, options=self.options,
                                timeout=(self.open_timeout, self.read_timeout))
        except (av.error.EOFError, av.error.InvalidDataError) as exc:
            raise InputError(f"cannot open: no {self.fmt or 'media'} stream found in what was "
                             f"received (garbage or wrong format?): {_why(exc)}") from exc
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open: {_why(exc)}") from exc
        try:
            tracks, mapping = make_tracks(list(container.streams))
        except InputError:
            container.close()
            raise
        fmt_names = set(container.format.name.split(","))
        wrap = next((_WRAP_BITS[n] for n in fmt_names if n in _WRAP_BITS), None)
        opened = InputOpened(tracks, wrap, arrival)
        return PyAVConnection(container, opened, mapping, self.clock, self.realtime, stop)
