"""VOD output from an index and its plan: playlists, the static MPD, TS and CMAF segments.

Everything here is a pure function of the packet index, the plan and the packets'
payloads, so every node (and ``sidecar package``) produces the same bytes. URLs, relative
to the directory of the entry playlists:

* ``playlist.m3u8`` -> ``src/media.m3u8`` -> ``src/{N}.ts`` (MPEG-TS, both tracks)
* ``cmaf.m3u8`` -> ``video/media.m3u8``, ``audio/media.m3u8`` -> ``{kind}/init-0.mp4``,
  ``{kind}/{N}.m4s`` (CMAF, one track per file)
* ``manifest.mpd`` (static DASH over the same CMAF files, ``$Number$`` addressing)

CMAF ``mfhd`` sequence numbers are ``N + 1``: ISO/IEC 14496-12 wants them to increase and
the muxer maps 0 to 1, which would give segments 0 and 1 the same one.

``BANDWIDTH`` is the peak and ``AVERAGE-BANDWIDTH`` the mean segment bit rate, estimated
from the index's packet sizes with the muxers' overhead rounded up (TS: 188-byte packets
of 184-byte payload, a PES header, AUD/ADTS headers, PAT/PMT every 0.1 s and SDT every
0.5 s; CMAF: styp/moof/mdat headers and a trun entry per sample), so no file has to be
muxed to write a playlist; tests check the estimate against real segment sizes.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sidecar.errors import NotFound
from sidecar.grid import TICKS_PER_SECOND, format_seconds, round_seconds
from sidecar.manifests.dash import (
    CHANNEL_CONFIGURATION,
    CICP_CHANNELS,
    NAMESPACE,
    PROFILES,
    xs_duration,
)
from sidecar.manifests.hls import (
    CMAF_PLAYLIST,
    MEDIA_PLAYLIST,
    MULTIVARIANT_PLAYLIST,
    RENDITION,
    AudioRendition,
    Variant,
    init_uri,
    render_media,
    render_multivariant,
)
from sidecar.model import GridPacket
from sidecar.mux import fmp4
from sidecar.mux.ts import mux_ts
from sidecar.timeline import Entry, MediaPlaylist
from sidecar.vod.index import (
    BrokenMedia,
    IndexStale,
    PacketIndex,
    TrackMeta,
    UnsupportedMedia,
)
from sidecar.vod.reader import Source
from sidecar.vod.segmentation import Plan, Span, plan

MPD = "manifest.mpd"
INIT = init_uri(0)
KINDS = ("video", "audio")
_TS = 188
_PSI_PERIOD = TICKS_PER_SECOND // 10  # PAT + PMT
_SDT_PERIOD = TICKS_PER_SECOND // 2


@dataclass(frozen=True, slots=True)
class Rate:
    """Peak and average bit rate of one output, bits per second."""

    peak: int
    average: int


@dataclass(frozen=True, slots=True, eq=False)
class Vod:
    """One file cut into segments: what every manifest and segment is made from."""

    index: PacketIndex
    plan: Plan

    @classmethod
    def of(cls, index: PacketIndex, segment_duration: int) -> Vod:
        return cls(index, plan(index.track, index.pts, index.duration, index.keyframe,
                               driver=index.driver.track, segment_duration=segment_duration))

    @property
    def spans(self) -> tuple[Span, ...]:
        return self.plan.spans

    def span(self, number: int) -> Span:
        return self.spans[number]

    def numbers(self, meta: TrackMeta) -> tuple[int, ...]:
        """Segments that hold packets of the track (all of them, unless a track ends early)."""
        seg = self.plan.segment[self.index.track == meta.track]
        return tuple(int(n) for n in np.unique(seg[seg >= 0]))

    def cmaf_tracks(self) -> tuple[TrackMeta, ...]:
        """The CMAF tracks; raises UnsupportedMedia if a track cannot be CMAF."""
        name = Path(self.index.key.path).name
        for t in self.index.tracks:
            if t.cmaf_unsupported:
                raise UnsupportedMedia(f"{name}: no CMAF output: {t.cmaf_unsupported}")
        return self.index.tracks

    def cmaf_meta(self, kind: str) -> TrackMeta:
        meta = next((t for t in self.cmaf_tracks() if t.kind == kind), None)
        if meta is None:
            raise UnsupportedMedia(f"{Path(self.index.key.path).name} has no {kind} track")
        return meta

    # -- bit rates --------------------------------------------------------------------

    def ts_rate(self) -> Rate:
        ix = self.index
        # PES header with PTS (+ DTS when it differs), then what the muxer adds per frame.
        overhead = 14 + 5 * (ix.pts != ix.dts).astype(np.int64)
        for t in ix.tracks:
            extra = {"h264": 6, "hevc": 7, "aac": 7}.get(t.codec, 0)
            if t.track == ix.driver.track:
                extra += 8  # adaptation field with the PCR
            overhead[ix.track == t.track] += extra
        packets = -(-(ix.size + overhead) // (_TS - 4)) * _TS
        psi = [_TS * (3 + 2 * -(-s.duration // _PSI_PERIOD) + -(-s.duration // _SDT_PERIOD))
               for s in self.spans]
        return self._rate(packets, np.ones(len(ix), np.bool_), psi)

    def cmaf_rate(self, meta: TrackMeta) -> Rate:
        ix = self.index
        sizes = ix.size + 16
        return self._rate(sizes, ix.track == meta.track, [24 + 8 + 120] * len(self.spans))

    def _rate(self, sizes: np.ndarray, mask: np.ndarray, fixed: list[int]) -> Rate:
        seg = self.plan.segment
        keep = mask & (seg >= 0)
        totals = np.bincount(seg[keep], weights=sizes[keep], minlength=len(self.spans))
        present = np.bincount(seg[keep], minlength=len(self.spans)) > 0
        rates, total, span = [], 0, 0
        for s, size, here, extra in zip(self.spans, totals.tolist(), present.tolist(), fixed,
                                        strict=True):
            if not here:
                continue
            b = int(size) + extra
            rates.append(b * 8 * TICKS_PER_SECOND // max(s.duration, 1))
            total, span = total + b, span + s.duration
        if not rates:
            return Rate(0, 0)
        return Rate(max(rates), total * 8 * TICKS_PER_SECOND // max(span, 1))

    # -- playlists --------------------------------------------------------------------

    def media_playlist(self, numbers: tuple[int, ...] | None = None) -> MediaPlaylist:
        spans = [s for s in self.spans if numbers is None or s.number in numbers]
        target = max([1] + [round_seconds(s.duration) for s in spans])
        first = spans[0].number if spans else 0
        entries = tuple(Entry(s.number, s.start, s.duration, 0) for s in spans)
        return MediaPlaylist(target, first, 0, entries, ended=True)

    def ts_media(self) -> str:
        return render_media(self.media_playlist(), program_date_time=False)

    def ts_multivariant(self) -> str:
        return ts_multivariant([self])

    def cmaf_media(self, kind: str) -> str:
        meta = self.cmaf_meta(kind)
        return render_media(self.media_playlist(self.numbers(meta)), "m4s", init_uri,
                            program_date_time=False)

    def cmaf_multivariant(self) -> str:
        return cmaf_multivariant([self])

    def mpd(self) -> str:
        return render_static_mpd([self])

    # -- segments ---------------------------------------------------------------------

    def ts_segment(self, source: Source, number: int) -> bytes:
        packets = source.read(self.plan.rows(self.check(number)))
        return mux_ts(source.tracks, packets)

    def cmaf_rows(self, kind: str, number: int) -> np.ndarray:
        meta = self.cmaf_meta(kind)
        rows = self.plan.rows(self.check(number))
        return rows[self.index.track[rows] == meta.track]

    def cmaf_segment(self, source: Source, kind: str, number: int) -> bytes:
        rows = self.cmaf_rows(kind, number)
        if not len(rows):
            raise NotFound(f"segment {number} has no {kind} packets")
        return self.cmaf_from_packets(source, kind, number, source.read(rows))

    def cmaf_from_packets(self, source: Source, kind: str, number: int,
                          packets: list[GridPacket]) -> bytes:
        meta = self.cmaf_meta(kind)
        span = self.span(number)
        return fmp4.media_segment(source.tracks[meta.track], packets, number=number + 1,
                                  start=span.start, end=span.end)

    def cmaf_init(self, source: Source, kind: str) -> bytes:
        meta = self.cmaf_meta(kind)
        track = source.tracks[meta.track]
        cc = track.template.codec_context if track.template is not None else None
        first: bytes | None = None
        if cc is None or not cc.extradata:
            ix = self.index
            rows = np.flatnonzero((ix.track == meta.track) & ix.keyframe)[:1]
            first = source.read(rows)[0].data
        return fmp4.init_segment(track, first_keyframe=first)

    def check(self, number: int) -> int:
        """``number`` if the file has that segment, else NotFound."""
        if not 0 <= number < len(self.spans):
            raise NotFound(f"no segment {number} (the file has {len(self.spans)})")
        return number


def _resolution(meta: TrackMeta | None) -> str:
    return f"{meta.width}x{meta.height}" if meta is not None and meta.width else ""


def _contiguous(numbers: tuple[int, ...]) -> bool:
    return bool(numbers) and numbers[-1] - numbers[0] + 1 == len(numbers)


def _name(vod: Vod) -> str:
    return Path(vod.index.key.path).name


def _prefixes(vods: Sequence[Vod]) -> list[str]:
    """URL prefix of each member: none for one file, ``{i}/`` in a rendition group."""
    return [""] if len(vods) == 1 else [f"{i}/" for i in range(len(vods))]


# -- rendition groups ----------------------------------------------------------------------

class UnalignedRenditions(BrokenMedia):
    """Renditions of a group whose keyframes (so segments) do not line up (HTTP 422)."""


def rendition_group(indexes: Sequence[PacketIndex], segment_duration: int) -> tuple[Vod, ...]:
    """Files played as one ABR set: one common grid offset, segments checked to align.

    The common offset is the largest of the files' own: the same input timestamp lands on
    the same grid time in every rendition, as an encoder's aligned outputs need. Segment
    starts must agree within 1 ms (Matroska's precision), else switching would not be
    seamless: UnalignedRenditions names the first segment that differs.
    """
    offset = max(ix.offset for ix in indexes)
    vods = tuple(Vod.of(ix.shifted(offset - ix.offset), segment_duration) for ix in indexes)
    first = vods[0]
    for other in vods[1:]:
        a, b = [s.start for s in first.spans], [s.start for s in other.spans]
        bad = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if abs(x - y) > 90),
                   None)
        if bad is None and len(a) != len(b):
            bad = min(len(a), len(b))
        if bad is not None:
            def at(starts: list[int], i: int = bad) -> str:
                return format_seconds(starts[i], 3) + " s" if i < len(starts) else "nothing"
            raise UnalignedRenditions(
                f"renditions are not keyframe-aligned: segment {bad} starts at {at(a)} in "
                f"{_name(first)} but at {at(b)} in {_name(other)}")
    return vods


# -- multivariant playlists ----------------------------------------------------------------

def ts_multivariant(vods: Sequence[Vod]) -> str:
    """MPEG-TS multivariant playlist: one variant per file, bit rates from the index."""
    variants = []
    for vod, prefix in zip(vods, _prefixes(vods), strict=True):
        rate = vod.ts_rate()
        video = vod.index.meta("video")
        codecs = ",".join(t.codec_string for t in vod.index.tracks)
        variants.append(Variant(f"{prefix}{RENDITION}/{MEDIA_PLAYLIST}", rate.peak, codecs,
                                _resolution(video), rate.average,
                                video.frame_rate if video is not None else ""))
    return render_multivariant(variants)


def cmaf_multivariant(vods: Sequence[Vod]) -> str:
    """fMP4 multivariant playlist: video variants sharing the first file's audio."""
    members = [(vod, prefix, vod.cmaf_tracks()) for vod, prefix in zip(vods, _prefixes(vods),
                                                                       strict=True)]
    audio = next(((vod, prefix, t) for vod, prefix, tracks in members for t in tracks
                  if t.kind == "audio"), None)
    videos = [(vod, prefix, t) for vod, prefix, tracks in members for t in tracks
              if t.kind == "video"]
    if not videos:
        variants = []
        for vod, prefix, tracks in members:
            rate = vod.cmaf_rate(tracks[0])
            variants.append(Variant(f"{prefix}audio/{MEDIA_PLAYLIST}", rate.peak,
                                    tracks[0].cmaf_codec, average_bandwidth=rate.average))
        return render_multivariant(variants, version=7)
    renditions = []
    audio_rate = Rate(0, 0)
    if audio is not None:
        a_vod, a_prefix, a_meta = audio
        audio_rate = a_vod.cmaf_rate(a_meta)
        renditions.append(AudioRendition(f"{a_prefix}audio/{MEDIA_PLAYLIST}",
                                         channels=a_meta.channels))
    variants = []
    for vod, prefix, meta in videos:
        rate = vod.cmaf_rate(meta)
        codecs = ",".join([meta.cmaf_codec] + ([audio[2].cmaf_codec] if audio else []))
        variants.append(Variant(f"{prefix}video/{MEDIA_PLAYLIST}", rate.peak + audio_rate.peak,
                                codecs, _resolution(meta), rate.average + audio_rate.average,
                                meta.frame_rate, "audio" if renditions else ""))
    return render_multivariant(variants, renditions, version=7)


# -- static DASH --------------------------------------------------------------------------

def render_static_mpd(vods: Sequence[Vod]) -> str:
    """A static MPD (isoff-live + CMAF profiles) over the CMAF files, ``$Number$`` names.

    One video adaptation set with a representation per file, one audio adaptation set
    (the first file's audio). Each representation has a ``SegmentTimeline`` of the spans
    its track has packets in (``startNumber`` = the first); ``presentationTimeOffset`` is
    the first segment's start, so the presentation starts at 0.
    """
    members = [(vod, prefix, vod.cmaf_tracks()) for vod, prefix in zip(vods, _prefixes(vods),
                                                                       strict=True)]
    spans = vods[0].spans
    first, last = spans[0], spans[-1]
    total = last.end - first.start
    longest = max(s.duration for v in vods for s in v.spans)
    mpd = ET.Element("MPD", {
        "xmlns": NAMESPACE,
        "type": "static",
        "profiles": PROFILES,
        "mediaPresentationDuration": xs_duration(total),
        "minBufferTime": xs_duration(min(2 * vods[0].plan.segment_duration, max(total, 1))),
        "maxSegmentDuration": xs_duration(longest),
    })
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    for set_id, kind in enumerate(KINDS):
        reps = [(vod, prefix, t) for vod, prefix, tracks in members for t in tracks
                if t.kind == kind]
        if kind == "audio":
            reps = reps[:1]
        if reps:
            period.append(_adaptation_set(set_id, kind, reps, first.start, len(vods) > 1))
    ET.indent(mpd, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"


def _adaptation_set(set_id: int, kind: str, reps: list[tuple[Vod, str, TrackMeta]],
                    offset: int, group: bool) -> ET.Element:
    attrs = {"id": str(set_id), "contentType": kind, "mimeType": f"{kind}/mp4",
             "segmentAlignment": "true", "startWithSAP": "1"}
    metas = [m for _, _, m in reps]
    if kind == "video":
        attrs.update(maxWidth=str(max(m.width for m in metas)),
                     maxHeight=str(max(m.height for m in metas)))
        rates = [m.frame_rate for m in metas if m.frame_rate]
        if rates:
            attrs["maxFrameRate"] = max(rates, key=lambda r: Fraction(r))
    el = ET.Element("AdaptationSet", attrs)
    if kind == "audio" and metas[0].channels in CICP_CHANNELS:
        ET.SubElement(el, "AudioChannelConfiguration", {
            "schemeIdUri": CHANNEL_CONFIGURATION, "value": str(CICP_CHANNELS[metas[0].channels])})
    for i, (vod, prefix, meta) in enumerate(reps):
        numbers = vod.numbers(meta)
        if not _contiguous(numbers):
            raise UnsupportedMedia(f"{_name(vod)}: the {meta.kind} track has holes, which "
                                   "$Number$ addressing cannot express")
        rep = {"id": f"{kind}-{i}" if group else kind,
               "bandwidth": str(vod.cmaf_rate(meta).peak), "codecs": meta.cmaf_codec}
        if kind == "video":
            rep.update(width=str(meta.width), height=str(meta.height))
            if meta.frame_rate:
                rep["frameRate"] = meta.frame_rate
        elif meta.sample_rate:
            rep["audioSamplingRate"] = str(meta.sample_rate)
        rep_el = ET.SubElement(el, "Representation", rep)
        rep_el.append(_segment_template(vod, f"{prefix}{kind}", numbers, offset))
    return el


def _segment_template(vod: Vod, folder: str, numbers: tuple[int, ...], offset: int
                      ) -> ET.Element:
    template = ET.Element("SegmentTemplate", {
        "timescale": str(TICKS_PER_SECOND),
        "presentationTimeOffset": str(offset),
        "startNumber": str(numbers[0]),
        "initialization": f"{folder}/{INIT}",
        "media": f"{folder}/$Number$.m4s",
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    runs: list[list[int]] = []  # [t, d, r]
    for n in numbers:
        s = vod.span(n)
        if runs and runs[-1][1] == s.duration:
            runs[-1][2] += 1
        else:
            runs.append([s.start, s.duration, 0])
    for j, (t, d, r) in enumerate(runs):
        attrs = {"t": str(t)} if j == 0 else {}
        attrs["d"] = str(d)
        if r:
            attrs["r"] = str(r)
        ET.SubElement(timeline, "S", attrs)
    return template


# -- writing a whole package ---------------------------------------------------------------

def manifests(vod: Vod) -> dict[str, str]:
    """Every manifest of the file by relative path (CMAF ones only when CMAF is possible)."""
    out = {MULTIVARIANT_PLAYLIST: vod.ts_multivariant(),
           f"{RENDITION}/{MEDIA_PLAYLIST}": vod.ts_media()}
    try:
        tracks = vod.cmaf_tracks()
    except UnsupportedMedia:
        return out
    out[CMAF_PLAYLIST] = vod.cmaf_multivariant()
    for t in tracks:
        out[f"{t.kind}/{MEDIA_PLAYLIST}"] = vod.cmaf_media(t.kind)
    out[MPD] = vod.mpd()
    return out


def write_package(vod: Vod, source: Source, outdir: Path,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """Write every file of ``vod`` under ``outdir`` in one linear pass over the media.

    The bytes equal what the JIT path serves for the same URLs (same rows, same muxers).
    Returns ``{relative path: sha256}``.
    """
    ix, seg = vod.index, vod.plan.segment
    try:
        cmaf = vod.cmaf_tracks()
    except UnsupportedMedia:
        cmaf = ()
    written: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        target = outdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        written[name] = hashlib.sha256(data).hexdigest()

    for t in cmaf:
        put(f"{t.kind}/{INIT}", vod.cmaf_init(source, t.kind))
    want = {(int(ix.track[r]), int(ix.raw[r]), int(ix.size[r])): r for r in range(len(ix))}
    remaining = np.bincount(seg[seg >= 0], minlength=len(vod.spans)).tolist()
    buffers: dict[int, dict[int, bytes]] = {}
    total, done = len(vod.spans), 0
    source.reopen()  # a seek back to the start may skip packets before the first frame
    for track, pkt in source.demux():
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        row = want.pop((track, ts, pkt.size), None)
        if row is None or seg[row] < 0:
            continue
        n = int(seg[row])
        buffers.setdefault(n, {})[row] = bytes(pkt)
        remaining[n] -= 1
        if remaining[n] == 0:
            got = buffers.pop(n)
            packets = [source.packet(r, got[r]) for r in sorted(got)]
            put(f"{RENDITION}/{n}.ts", mux_ts(source.tracks, packets))
            for t in cmaf:
                own = [p for p in packets if p.track == t.track]
                if own:
                    put(f"{t.kind}/{n}.m4s", vod.cmaf_from_packets(source, t.kind, n, own))
            done += 1
            if progress is not None:
                progress(done, total)
    if done != total:
        raise IndexStale(f"{Path(ix.key.path).name}: only {done} of {total} segments could "
                         "be read back: the file changed since it was indexed")
    for name, body in manifests(vod).items():
        put(name, body.encode())
    return written


__all__ = ["MPD", "Rate", "UnalignedRenditions", "Vod", "cmaf_multivariant", "manifests",
           "render_static_mpd", "rendition_group", "ts_multivariant", "write_package"]
