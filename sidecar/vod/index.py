"""A file's packet index: one demux pass (no decoding) into numpy arrays, cached on disk.

Per packet, in demux order: track, PTS, DTS and duration in grid ticks, the raw PTS in the
stream's time base (what the reader matches packets by), size, keyframe flag, byte
position. Plus per track what the manifests need (codec strings, size, measured frame
rate), so playlists never open the media file.

Grid time (identical on every node, a pure function of the demuxer's timestamps):
``grid = rescale(timestamp) + offset`` with ONE offset per file, ``offset = -min(DTS)``,
so the first DTS is exactly 0. Timestamps are FFmpeg's as its demuxer reports them: MP4
edit lists are applied by the mov demuxer (AAC priming shows as a first audio packet with
a negative PTS, which the offset keeps), MPEG-TS timestamps are unwrapped (33 bits),
and where a demuxer gives no DTS (Matroska with B-frames) the DTS of the whole video track
is rebuilt as ``sorted(PTS) - shift`` with the smallest shift that keeps ``DTS <= PTS`` and
the DTS the demuxer did give.

The cache key is (absolute path, size, mtime_ns) plus the index format and PyAV version:
a changed file gets a new index. Files that cannot be indexed are remembered too
(negative cache, same key), so a broken file is not demuxed on every request and is
retried as soon as it changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sidecar.codecs import frame_rate_string
from sidecar.errors import InputError
from sidecar.grid import TICKS_PER_SECOND
from sidecar.ingest.pyav import make_tracks
from sidecar.model import Kind, TrackInfo
from sidecar.mux import fmp4

log = logging.getLogger(__name__)

INDEX_VERSION = 1
_WRAP = 1 << 33
_ARRAYS = ("track", "pts", "dts", "duration", "raw", "size", "keyframe", "pos")
# Standard frame rates a measured mean snaps to (within 0.1 %).
_RATES = tuple(Fraction(n, d) for n, d in (
    (24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (48, 1), (50, 1),
    (60000, 1001), (60, 1), (100, 1), (120000, 1001), (120, 1)))


class MediaError(InputError):
    """A media file that cannot be packaged; the message names the file and the cause."""


class UnsupportedMedia(MediaError):
    """Not a media file, or a codec the sidecar cannot package (HTTP 415)."""


class BrokenMedia(MediaError):
    """A media file that is truncated or corrupt (HTTP 422)."""


class IndexStale(MediaError):
    """The file no longer matches its index (it changed while being read)."""


@dataclass(frozen=True, slots=True)
class FileKey:
    """What identifies one version of a file on this node (never part of any output)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        st = path.stat()
        return cls(str(path), st.st_size, st.st_mtime_ns)

    @property
    def digest(self) -> str:
        text = f"{INDEX_VERSION}\0{av.__version__}\0{self.path}\0{self.size}\0{self.mtime_ns}"
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TrackMeta:
    """One indexed track: ``track`` is the sidecar's index (video 0, audio next)."""

    track: int
    stream: int
    kind: Kind
    codec: str
    codec_string: str
    time_base: str
    cmaf_codec: str = ""
    cmaf_unsupported: str = ""
    width: int = 0
    height: int = 0
    frame_rate: str = ""
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class PacketIndex:
    """Every usable packet of a file, in demux order (arrays are read-only)."""

    key: FileKey
    format: str
    offset: int
    wrapped: bool
    tracks: tuple[TrackMeta, ...]
    track: np.ndarray
    pts: np.ndarray
    dts: np.ndarray
    duration: np.ndarray
    raw: np.ndarray
    size: np.ndarray
    keyframe: np.ndarray
    pos: np.ndarray

    def __len__(self) -> int:
        return len(self.pts)

    def meta(self, kind: str) -> TrackMeta | None:
        return next((t for t in self.tracks if t.kind == kind), None)

    def rows_of(self, track: int) -> np.ndarray:
        return np.flatnonzero(self.track == track)

    def shifted(self, delta: int) -> PacketIndex:
        """The same packets with ``delta`` more grid offset (a rendition group's offset)."""
        if not delta:
            return self
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        arrays["pts"] = self.pts + delta
        arrays["dts"] = self.dts + delta
        return _freeze(self.key, self.format, self.offset + delta, self.wrapped, self.tracks,
                       arrays)

    @property
    def driver(self) -> TrackMeta:
        """The track segments are cut on: video, or audio for audio-only files."""
        return self.meta("video") or self.tracks[0]


def usable_packet(pkt: Any) -> bool:
    """The packets the index (and every reader) keeps: the same predicate everywhere."""
    return bool(pkt.size) and (pkt.pts is not None or pkt.dts is not None) and not (
        pkt.is_corrupt)


def _sniff(path: Path) -> str:
    """A container recognised by its first bytes (``""`` if none): broken vs not media."""
    try:
        with path.open("rb") as f:
            head = f.read(376)
    except OSError:
        return ""
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska"
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    if head[:3] == b"FLV":
        return "FLV"
    return ""


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def open_media(path: Path) -> Any:
    """``av.open`` for reading, with FFmpeg's failure turned into a MediaError."""
    try:
        return av.open(str(path))
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        kind = _sniff(path)
        if kind:
            raise BrokenMedia(f"{path.name}: {kind} file that FFmpeg cannot read (truncated "
                              f"or corrupt): {_why(exc)}") from exc
        raise UnsupportedMedia(f"{path.name}: not a media file FFmpeg can read") from exc
    except av.FFmpegError as exc:
        raise BrokenMedia(f"{path.name}: cannot open: {_why(exc)}") from exc


def select_tracks(path: Path, container: Any) -> tuple[tuple[TrackInfo, ...], dict[int, int]]:
    """The live ingest's track choice, refusing files whose main video or audio it skips."""
    streams = list(container.streams)
    try:
        tracks, mapping = make_tracks(streams)
    except InputError as exc:
        raise UnsupportedMedia(f"{path.name}: {exc}") from exc
    for kind in ("video", "audio"):
        first = next((s for s in streams if s.type == kind and not (
            kind == "video" and s.disposition & av.stream.Disposition.attached_pic)), None)
        if first is not None and first.index not in mapping:
            name = first.codec_context.codec.canonical_name if first.codec_context else "?"
            raise UnsupportedMedia(f"{path.name}: {kind} codec {name} is not supported "
                                   "(video: H.264, HEVC; audio: AAC, MP3, AC-3, E-AC-3)")
    return tracks, mapping


def _ticks(values: np.ndarray, tb: Fraction) -> np.ndarray:
    """Rescale to 90 kHz ticks, rounding down (``sidecar.grid.rescale`` on arrays)."""
    return values * (tb.numerator * TICKS_PER_SECOND) // tb.denominator


def _unwrap(dts: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Undo 33-bit wraps of one MPEG-TS track (DTS in demux order; PTS follows its DTS)."""
    step = np.diff(dts)
    fix = np.concatenate([[0], np.cumsum((step < -_WRAP // 2).astype(np.int64)
                                         - (step > _WRAP // 2).astype(np.int64))]) * _WRAP
    dts_u = dts + fix
    rel = (pts - dts + _WRAP // 2) % _WRAP - _WRAP // 2
    return dts_u, dts_u + rel, bool(fix.any())


def _rebuild_dts(pts: np.ndarray, dts: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``sorted(PTS) - shift``: the smallest shift with DTS <= PTS and the known DTS kept."""
    order = np.sort(pts)
    shift = int(np.max(order - pts))
    if known.any():
        shift = max(shift, int(np.max(order[known] - dts[known])))
    return order - shift


def _frame_rate(raw_pts: np.ndarray, tb: Fraction) -> str:
    if len(raw_pts) < 2:
        return ""
    span = int(raw_pts.max() - raw_pts.min())
    if span <= 0:
        return ""
    rate = Fraction(len(raw_pts) - 1) / (span * tb)
    snap = min(_RATES, key=lambda r: abs(r - rate))
    return frame_rate_string(snap if abs(snap - rate) <= snap / 1000 else rate)


@dataclass(slots=True)
class _Track:
    info: TrackInfo
    stream: Any
    pts: list[int] = field(default_factory=list)
    dts: list[int | None] = field(default_factory=list)
    first_key: bytes | None = None


def build_index(path: Path) -> PacketIndex:
    """Demux ``path`` once and index every usable packet (raises MediaError)."""
    path = path.resolve()
    key = FileKey.of(path)
    with open_media(path) as container:
        tracks, mapping = select_tracks(path, container)
        by_stream = {i: _Track(tracks[t], container.streams[i]) for i, t in mapping.items()}
        cols: dict[str, list[int]] = {k: [] for k in ("track", "duration", "size", "key",
                                                       "pos")}
        seen = dict.fromkeys(mapping, 0)
        streams = [container.streams[i] for i in mapping]
        try:
            for pkt in container.demux(streams):
                if pkt.stream_index not in mapping:
                    continue
                seen[pkt.stream_index] += 1
                if not usable_packet(pkt):
                    continue
                t = by_stream[pkt.stream_index]
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                t.pts.append(ts)
                t.dts.append(pkt.dts)
                if t.first_key is None and pkt.is_keyframe:
                    t.first_key = bytes(pkt)
                cols["track"].append(mapping[pkt.stream_index])
                cols["duration"].append(pkt.duration or 0)
                cols["size"].append(pkt.size)
                cols["key"].append(1 if pkt.is_keyframe else 0)
                cols["pos"].append(pkt.pos if pkt.pos is not None else -1)
        except av.FFmpegError as exc:
            raise BrokenMedia(f"{path.name}: read failed after {len(cols['size'])} packets: "
                              f"{_why(exc)}") from exc
        for i, t in by_stream.items():
            declared = t.stream.frames or 0
            if declared and seen[i] < declared:
                raise BrokenMedia(f"{path.name}: truncated: {t.info.kind} track has "
                                  f"{seen[i]} of its {declared} packets")
        fmt = container.format.name
        index = _assemble(path, key, fmt, by_stream, cols)
    if FileKey.of(path) != key:
        raise IndexStale(f"{path.name} changed while it was being indexed")
    return index


def _assemble(path: Path, key: FileKey, fmt: str, by_stream: dict[int, _Track],
              cols: dict[str, list[int]]) -> PacketIndex:
    track = np.asarray(cols["track"], np.int8)
    n = len(track)
    pts = np.zeros(n, np.int64)
    dts = np.zeros(n, np.int64)
    raw = np.zeros(n, np.int64)
    duration = np.asarray(cols["duration"], np.int64)
    keyframe = np.asarray(cols["key"], np.bool_)
    wrapped = False
    metas: list[TrackMeta] = []
    for stream_index, t in sorted(by_stream.items(), key=lambda kv: kv[1].info.index):
        rows = np.flatnonzero(track == t.info.index)
        if not len(rows):
            raise BrokenMedia(f"{path.name}: {t.info.kind} track without packets")
        tb = Fraction(t.stream.time_base)
        p = np.asarray(t.pts, np.int64)
        known = np.asarray([d is not None for d in t.dts], np.bool_)
        d = np.asarray([p_ if d_ is None else d_ for p_, d_ in zip(t.pts, t.dts, strict=True)],
                       np.int64)
        raw[rows] = p
        if fmt == "mpegts":
            d, p, w = _unwrap(d, p)
            wrapped = wrapped or w
        if t.info.kind == "video" and (not known.all() or np.any(np.diff(d) <= 0)):
            d = _rebuild_dts(p, d, known)
        pts[rows] = _ticks(p, tb)
        dts[rows] = _ticks(d, tb)
        dur = _ticks(duration[rows], tb)
        if np.any(dur <= 0):
            steps = np.diff(np.sort(pts[rows]))
            steps = steps[steps > 0]
            fill = int(np.median(steps)) if len(steps) else 1
            dur = np.where(dur > 0, dur, fill)
        duration[rows] = dur
        if t.info.kind == "audio":
            keyframe[rows] = True  # every AAC/MP3/AC-3 frame is a random access point
        elif not keyframe[rows].any():
            raise BrokenMedia(f"{path.name}: video track without any keyframe")
        metas.append(_meta(t, stream_index, tb, p))
    offset = -int(dts.min())
    pts += offset
    dts += offset
    arrays: dict[str, np.ndarray] = {
        "track": track, "pts": pts, "dts": dts, "duration": duration, "raw": raw,
        "size": np.asarray(cols["size"], np.int64), "keyframe": keyframe,
        "pos": np.asarray(cols["pos"], np.int64)}
    return _freeze(key, fmt, offset, wrapped, tuple(metas), arrays)


def _meta(t: _Track, stream_index: int, tb: Fraction, raw_pts: np.ndarray) -> TrackMeta:
    info = t.info
    reason = fmp4.unsupported_reason(info) or ""
    cmaf = ""
    if not reason:
        try:
            cmaf = fmp4.codec_string(info, first_keyframe=t.first_key)
        except fmp4.Fmp4Error as exc:
            reason = str(exc)
    meta = TrackMeta(info.index, stream_index, info.kind, info.codec,
                     cmaf or info.codec_string, f"{tb.numerator}/{tb.denominator}", cmaf,
                     reason)
    if info.kind == "video":
        return replace(meta, width=info.width, height=info.height,
                       frame_rate=_frame_rate(raw_pts, tb))
    return replace(meta, sample_rate=info.sample_rate, channels=info.channels)


def _freeze(key: FileKey, fmt: str, offset: int, wrapped: bool, tracks: tuple[TrackMeta, ...],
            arrays: dict[str, np.ndarray]) -> PacketIndex:
    for a in arrays.values():
        a.setflags(write=False)
    return PacketIndex(key, fmt, offset, wrapped, tracks, **arrays)


# -- the on-disk cache --------------------------------------------------------------------

@dataclass(slots=True)
class CacheStats:
    built: int = 0
    loaded: int = 0
    memory_hits: int = 0
    negative_hits: int = 0


def _save(index: PacketIndex, target: Path) -> None:
    meta = {"version": INDEX_VERSION, "key": asdict(index.key), "format": index.format,
            "offset": index.offset, "wrapped": index.wrapped,
            "tracks": [asdict(t) for t in index.tracks]}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    arrays = {k: getattr(index, k) for k in _ARRAYS}
    _atomic(target, lambda f: np.savez(f, meta=blob, **arrays))


def _load(source: Path, key: FileKey) -> PacketIndex | None:
    try:
        with np.load(source, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("version") != INDEX_VERSION or FileKey(**meta["key"]) != key:
                return None
            arrays = {k: np.array(z[k]) for k in _ARRAYS}
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        log.warning("vod index cache %s unreadable, rebuilding: %s", source.name, exc)
        return None
    tracks = tuple(TrackMeta(**t) for t in meta["tracks"])
    return _freeze(key, meta["format"], meta["offset"], meta["wrapped"], tracks, arrays)


def _atomic(target: Path, write: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class IndexCache:
    """Indexes by file version: memory (LRU), then disk, then one demux pass.

    Thread-safe; concurrent requests for the same file version build its index once.
    ``directory=None`` keeps indexes in memory only (the ``package`` command).
    """

    def __init__(self, directory: Path | None, *, memory: int = 64) -> None:
        self.directory = directory
        self.memory = memory
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._indexes: OrderedDict[str, PacketIndex] = OrderedDict()
        self._failures: OrderedDict[str, MediaError] = OrderedDict()

    def get(self, path: Path) -> PacketIndex:
        """The index of ``path`` as it is now (raises MediaError, OSError)."""
        key = FileKey.of(path.resolve())
        digest = key.digest
        with self._lock:
            found = self._remembered(digest)
            gate = self._building.setdefault(digest, threading.Lock())
        if found is not None:
            return found
        with gate:
            with self._lock:
                found = self._remembered(digest)
            if found is not None:
                return found
            try:
                index = self._load_or_build(path.resolve(), key)
            except IndexStale:
                raise
            except MediaError as exc:
                self._remember_failure(digest, exc)
                raise
            finally:
                with self._lock:
                    self._building.pop(digest, None)
            with self._lock:
                self._indexes[digest] = index
                while len(self._indexes) > self.memory:
                    self._indexes.popitem(last=False)
            return index

    def _remembered(self, digest: str) -> PacketIndex | None:
        index = self._indexes.get(digest)
        if index is not None:
            self._indexes.move_to_end(digest)
            self.stats.memory_hits += 1
            return index
        failure = self._failures.get(digest)
        if failure is None and self.directory is not None:
            failure = self._disk_failure(digest)
        if failure is not None:
            self.stats.negative_hits += 1
            raise type(failure)(str(failure))
        return None

    def _file(self, digest: str, suffix: str) -> Path:
        assert self.directory is not None
        return self.directory / digest[:2] / f"{digest}{suffix}"

    def _disk_failure(self, digest: str) -> MediaError | None:
        try:
            data = json.loads(self._file(digest, ".err.json").read_text())
        except (OSError, ValueError):
            return None
        kinds: dict[str, type[MediaError]] = {"unsupported": UnsupportedMedia,
                                              "broken": BrokenMedia}
        cls = kinds.get(data.get("kind"), BrokenMedia)
        failure = cls(str(data.get("reason", "")))
        self._failures[digest] = failure
        return failure

    def _remember_failure(self, digest: str, exc: MediaError) -> None:
        with self._lock:
            self._failures[digest] = exc
            while len(self._failures) > 4 * self.memory:
                self._failures.popitem(last=False)
        if self.directory is not None:
            kind = "unsupported" if isinstance(exc, UnsupportedMedia) else "broken"
            body = json.dumps({"kind": kind, "reason": str(exc)}).encode()
            _atomic(self._file(digest, ".err.json"), lambda f: f.write(body))

    def _load_or_build(self, path: Path, key: FileKey) -> PacketIndex:
        if self.directory is not None:
            cached = self._file(key.digest, ".npz")
            if cached.exists():
                index = _load(cached, key)
                if index is not None:
                    self.stats.loaded += 1
                    return index
        index = build_index(path)
        if index.key != key:
            raise IndexStale(f"{path.name} changed while it was being indexed")
        self.stats.built += 1
        if self.directory is not None:
            _save(index, self._file(key.digest, ".npz"))
        return index
