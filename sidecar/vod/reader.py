"""Reading a file's packets by index rows: seek near them, demux forward, match.

Timing always comes from the index (grid ticks); only the payload comes from the demuxer.
A demuxed packet is matched to its row by (track, raw PTS, size), so a seek that lands
early costs only some extra demuxing, and a seek that lands late is detected (rows still
missing once every track has gone past them) and retried further back, at last from the
start of the file. Rows that cannot be found mean the file changed: ``IndexStale``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sidecar.grid import TICKS_PER_SECOND
from sidecar.model import GridPacket, TrackInfo
from sidecar.vod.index import (
    BrokenMedia,
    FileKey,
    IndexStale,
    PacketIndex,
    open_media,
    select_tracks,
    usable_packet,
)

# How far before the earliest wanted DTS the first seek aims; multiplied on each retry.
_MARGIN = TICKS_PER_SECOND
_ATTEMPTS = 3
# Containers with a sample index (seeks land exactly on indexed packets).
_INDEXED_FORMATS = ("mov", "matroska")


@dataclass(slots=True)
class Source:
    """One open file with the tracks (codec templates) the muxers need."""

    index: PacketIndex
    container: Any
    tracks: tuple[TrackInfo, ...]
    mapping: dict[int, int]
    lossy_rewind: bool = False

    @classmethod
    def open(cls, index: PacketIndex) -> Source:
        path = Path(index.key.path)
        container = open_media(path)
        try:
            tracks, mapping = select_tracks(path, container)
            expected = {t.stream: t.track for t in index.tracks}
            if mapping != expected or FileKey.of(path) != index.key:
                raise IndexStale(f"{path.name} changed since it was indexed")
        except BaseException:
            container.close()
            raise
        return cls(index, container, tracks, mapping)

    def close(self) -> None:
        self.container.close()

    def packet(self, row: int, data: bytes) -> GridPacket:
        ix = self.index
        t = int(ix.track[row])
        return GridPacket(t, self.tracks[t].kind, int(ix.pts[row]), int(ix.dts[row]),
                          int(ix.duration[row]), bool(ix.keyframe[row]), data)

    def demux(self) -> Iterator[tuple[int, Any]]:
        """(track, packet) for every usable packet from the current position."""
        streams = [self.container.streams[i] for i in self.mapping]
        try:
            for pkt in self.container.demux(streams):
                if pkt.stream_index in self.mapping and usable_packet(pkt):
                    yield self.mapping[pkt.stream_index], pkt
        except av.FFmpegError as exc:
            raise BrokenMedia(f"{Path(self.index.key.path).name}: read failed: {exc}") from exc

    def rewind(self) -> None:
        """Back to the first packet: seek before the driver's first timestamp."""
        if self.lossy_rewind:
            self.reopen()
            return
        ix = self.index
        meta = ix.driver
        first = int(ix.raw[ix.rows_of(meta.track)].min())
        try:
            if ix.format.split(",")[0] in _INDEXED_FORMATS:
                self.container.seek(first - 1, backward=True, any_frame=True,
                                    stream=self.container.streams[meta.stream])
            else:  # MPEG-TS, MP3, ...: byte 0 (a timestamp seek parses mid-stream)
                self.container.seek(0, unsupported_byte_offset=True)
        except av.FFmpegError:
            self.reopen()

    def reopen(self) -> None:
        """A fresh demuxer at the start of the file (the last resort of ``read``)."""
        self.container.close()
        self.container = open_media(Path(self.index.key.path))

    def read(self, rows: np.ndarray) -> list[GridPacket]:
        """The packets of ``rows`` (index rows), in row order."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return []
        ix = self.index
        margin = _MARGIN
        attempt = 0
        while True:
            final = attempt >= _ATTEMPTS
            if final:
                self.reopen()
            from_start = final or not self._seek(int(ix.dts[rows].min()) - margin)
            got = self._collect(rows)
            if len(got) == len(rows):
                return [self.packet(r, got[r]) for r in rows.tolist()]
            if final:
                break
            if from_start:
                # A rewind by seeking lost packets (mov: audio priming before the first
                # video sample): this file rewinds by reopening from now on.
                self.lossy_rewind = True
                attempt = _ATTEMPTS
            else:
                attempt += 1
                margin *= 8
        raise IndexStale(f"{Path(ix.key.path).name}: {len(rows)} indexed packets not all "
                         "found: the file changed since it was indexed")

    def _seek(self, grid_dts: int) -> bool:
        """Seek to at or before ``grid_dts``; False (and rewound) when that is the start."""
        ix = self.index
        meta = ix.driver
        first = int(ix.dts[ix.rows_of(meta.track)[0]])
        if grid_dts <= first or ix.wrapped:
            self.rewind()
            return False
        tb = Fraction(meta.time_base)
        target = (grid_dts - ix.offset) * tb.denominator // (tb.numerator * TICKS_PER_SECOND)
        try:
            self.container.seek(target, backward=True, any_frame=False,
                                stream=self.container.streams[meta.stream])
        except av.FFmpegError:
            self.rewind()
            return False
        return True

    def _collect(self, rows: np.ndarray) -> dict[int, bytes]:
        ix = self.index
        want: dict[tuple[int, int, int], int] = {
            (int(ix.track[r]), int(ix.raw[r]), int(ix.size[r])): int(r) for r in rows}
        # A track is done once the demuxer has gone past its last wanted row.
        last_dts: dict[int, int] = {}
        for r in rows.tolist():
            t = int(ix.track[r])
            last_dts[t] = max(last_dts.get(t, -(1 << 62)), int(ix.dts[r]))
        got: dict[int, bytes] = {}
        tbs = {t.track: Fraction(t.time_base) for t in ix.tracks}
        pending = set(last_dts)
        for track, pkt in self.demux():
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            row = want.get((track, ts, pkt.size))
            if row is not None and row not in got:
                got[row] = bytes(pkt)
                if len(got) == len(want):
                    break
            if track in pending and pkt.dts is not None and not ix.wrapped:
                tb = tbs[track]
                dts = pkt.dts * tb.numerator * TICKS_PER_SECOND // tb.denominator + ix.offset
                if dts > last_dts[track]:
                    pending.discard(track)
                    if not pending:
                        break
        return got


class SourcePool:
    """Open files kept for reuse (opening an MP4 parses its whole moov), per file version."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[Source] = []

    def acquire(self, index: PacketIndex) -> Source:
        with self._lock:
            for i, s in enumerate(self._idle):
                if s.index.key == index.key:
                    source = self._idle.pop(i)
                    source.index = index
                    return source
        return Source.open(index)

    def release(self, source: Source) -> None:
        with self._lock:
            self._idle.append(source)
            while len(self._idle) > self.size:
                self._idle.pop(0).close()

    def discard(self, source: Source) -> None:
        source.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()
