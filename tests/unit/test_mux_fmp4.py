from __future__ import annotations

import hashlib
import io
import itertools
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest

from fixtures.media import make_clip
from sidecar.ingest.pyav import make_tracks
from sidecar.model import GridPacket, Kind, TrackInfo
from sidecar.mux import boxes, fmp4
from sidecar.mux.fmp4 import Fmp4Error, codec_string, init_segment, media_segment
from sidecar.mux.ts import MuxError
from tests import sim

OFFSET = 1_800_000_000 * 90_000  # grid ticks, far beyond 32 bits
SLOT = 180_000  # 2 s: the clips have 2 s closed GOPs
ROOT = Path(__file__).resolve().parents[2]


# -- test media ----------------------------------------------------------------------------

@dataclass
class Clip:
    tracks: tuple[TrackInfo, ...]
    packets: dict[str, list[GridPacket]]

    def track(self, kind: str) -> TrackInfo:
        return next(t for t in self.tracks if t.kind == kind)


@dataclass
class Seg:
    number: int
    start: int
    end: int
    video: list[GridPacket]
    audio: list[GridPacket]


def load(path: Path, offset: int = OFFSET) -> Clip:
    """Demux a file like the ingest does and put its packets on the grid."""
    with av.open(str(path)) as c:
        tracks, mapping = make_tracks(list(c.streams))
        out: dict[str, list[GridPacket]] = {"video": [], "audio": []}
        for p in c.demux():
            if not p.size or p.stream.index not in mapping:
                continue
            t = tracks[mapping[p.stream.index]]
            tb = p.time_base

            def ticks(v: int, tb: Fraction = tb) -> int:
                return v * tb.numerator * 90_000 // tb.denominator

            assert p.pts is not None and p.dts is not None
            out[t.kind].append(GridPacket(t.index, t.kind, ticks(p.pts) + offset,
                                          ticks(p.dts) + offset, ticks(p.duration or 0),
                                          p.is_keyframe, bytes(p)))
    return Clip(tracks, out)


def cut(clip: Clip) -> list[Seg]:
    """Segments from keyframe to keyframe (PTS), audio by PTS, like the segmenter."""
    v = sorted(clip.packets["video"], key=lambda p: p.dts)
    keys = [i for i, p in enumerate(v) if p.keyframe]
    segs = []
    for a, b in itertools.pairwise(keys):
        start, end = v[a].pts, v[b].pts
        audio = [p for p in clip.packets["audio"] if start <= p.pts < end]
        segs.append(Seg(start // SLOT, start, end, v[a:b], audio))
    return segs


def make_hevc_clip(path: Path, seconds: int = 6, fps: int = 25) -> Path:
    """HEVC (libx265, closed 2 s GOPs, 2 B-frames), video only."""
    w, h = 320, 180
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx265", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        gop = fps * 2
        v.codec_context.options = {
            "preset": "ultrafast",
            "x265-params": f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:"
                           "bframes=2:open-gop=0:pools=1:frame-threads=1",
        }
        for i in range(seconds * fps):
            y = np.full((h, w), 16 + (i * 7) % 200, np.uint8)
            y[:, (i * 4) % w : (i * 4) % w + 8] = 235
            frame = av.VideoFrame.from_ndarray(
                np.vstack([y, np.full((h // 2, w), 128, np.uint8)]), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fmp4")
    files = {ext: make_clip(d / f"clip.{ext}", 6) for ext in ("flv", "ts", "mp4")}
    files["flv0"] = make_clip(d / "clip0.flv", 6, bframes=0)
    if "libx265" in av.codecs_available:
        files["hevc.mp4"] = make_hevc_clip(d / "hevc.mp4")
        files["hevc.ts"] = make_hevc_clip(d / "hevc.ts")
    return files


@pytest.fixture(scope="module")
def clips(media: dict[str, Path]) -> dict[str, Clip]:
    return {name: load(path) for name, path in media.items()}


def hevc(clips: dict[str, Clip], name: str) -> Clip:
    if name not in clips:
        pytest.fail("libx265 is not available in this PyAV build (the HEVC tests need it)")
    return clips[name]


# -- reading back --------------------------------------------------------------------------

def one_traf(seg: bytes) -> list[boxes.Sample]:
    trafs = boxes.find(seg, "moof/traf")
    assert len(trafs) == 1
    return boxes.traf_samples(seg, trafs[0])


def tfdt_of(seg: bytes) -> int:
    (box,) = boxes.find(seg, "moof/traf/tfdt")
    assert boxes.full_box(seg, box)[0] == 1  # 64-bit
    return boxes.tfdt(seg, box)


def mfhd_of(seg: bytes) -> int:
    (box,) = boxes.find(seg, "moof/mfhd")
    return boxes.mfhd(seg, box)


def brands(data: bytes, kind: bytes) -> tuple[bytes, list[bytes]]:
    (box,) = [b for b in boxes.walk(data) if b.type == kind]
    body = box.payload(data)
    return body[:4], [body[i : i + 4] for i in range(8, len(body), 4)]


@dataclass
class Decoded:
    pts: list[int]
    samples: int
    logs: list[str]


@pytest.fixture
def capture() -> Iterator[None]:
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    yield
    av.logging.set_level(level)


def decode(data: bytes, kind: str) -> Decoded:
    """Decode a whole track file, collecting FFmpeg warnings and errors."""
    with av.logging.Capture() as logs, av.open(io.BytesIO(data), "r", format="mp4") as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        pts: list[int] = []
        samples = 0
        for frame in c.decode(stream):
            assert frame.pts is not None
            pts.append(frame.pts)
            samples += getattr(frame, "samples", 0)
    return Decoded(pts, samples, [f"{name}: {msg.strip()}" for _, name, msg in logs])


def mux_all(clip: Clip, kind: str, segs: list[Seg]) -> list[bytes]:
    t = clip.track(kind)
    return [media_segment(t, s.video if kind == "video" else s.audio, number=s.number,
                          start=s.start, end=s.end) for s in segs]


def audio_ts(track: TrackInfo, ticks: int) -> int:
    return (2 * ticks * track.sample_rate + 90_000) // 180_000


# -- init segments -------------------------------------------------------------------------

def zero_times(data: bytes, path: str) -> None:
    (box,) = boxes.find(data, path)
    version, _ = boxes.full_box(data, box)
    fmt = ">QQ" if version == 1 else ">II"
    assert struct.unpack_from(fmt, data, box.body + 4) == (0, 0), path


@pytest.mark.parametrize("name", ["flv", "ts", "mp4"])
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_init_segment_is_a_cmaf_header(clips: dict[str, Clip], name: str, kind: str) -> None:
    track = clips[name].track(kind)
    init = init_segment(track)
    assert init == init_segment(track)
    assert [b.type for b in boxes.walk(init)] == [b"ftyp", b"moov"]
    major, compat = brands(init, b"ftyp")
    assert major == b"iso6" and {b"iso6", b"cmfc"} <= set(compat)
    assert b"Lavf" not in init
    for path in ("moov/mvhd", "moov/trak/tkhd", "moov/trak/mdia/mdhd"):
        zero_times(init, path)
    (tkhd,) = boxes.find(init, "moov/trak/tkhd")
    version, _ = boxes.full_box(init, tkhd)
    assert struct.unpack_from(">I", init, tkhd.body + (20 if version else 12))[0] == 1
    assert len(boxes.find(init, "moov/trak")) == 1
    (trex,) = boxes.find(init, "moov/mvex/trex")
    assert struct.unpack_from(">I", init, trex.body + 4)[0] == 1  # track id
    assert not boxes.find(init, "moov/trak/edts")
    (mdhd,) = boxes.find(init, "moov/trak/mdia/mdhd")
    scale = struct.unpack_from(">I", init, mdhd.body + 12)[0]
    assert scale == (90_000 if kind == "video" else 48_000)
    entry = b"avc1" if kind == "video" else b"mp4a"
    (stsd,) = boxes.find(init, "moov/trak/mdia/minf/stbl/stsd")
    assert [b.type for b in boxes.children(init, stsd)] == [entry]


def test_video_init_is_the_same_from_rtmp_and_mpegts(clips: dict[str, Clip]) -> None:
    # avcC from an avcC record (FLV) and from Annex B SPS/PPS (MPEG-TS) come out equal.
    assert init_segment(clips["flv"].track("video")) == init_segment(clips["ts"].track("video"))


def test_annexb_track_without_extradata_needs_its_first_keyframe(capture: None) -> None:
    # A copy of the synthetic source's template carries no extradata at all (only the
    # codec context of the original holds it), like an Annex B stream before probing.
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    bare = holder.add_stream_from_template(sim.tracks()[0].template)
    assert not bare.codec_context.extradata
    video = replace(sim.tracks()[0], template=bare)
    raw = [p for p in sim.feed(4) if p.track == 0]
    packets = [GridPacket(0, "video", (p.pts or 0) + OFFSET, (p.dts or 0) + OFFSET,
                          p.duration, p.keyframe, p.data) for p in raw]
    with pytest.raises(Fmp4Error, match="first keyframe"):
        init_segment(video)
    init = init_segment(video, first_keyframe=packets[0].data)
    assert boxes.find(init, "moov/trak/mdia/minf/stbl/stsd/avc1/avcC")
    assert init == init_segment(sim.tracks()[0])  # same SPS/PPS, same header
    assert codec_string(video) == codec_string(video, first_keyframe=packets[0].data)
    assert codec_string(video) == video.codec_string
    half = len(packets) // 2
    segs = [media_segment(video, packets[:half], number=7, start=packets[0].pts,
                          end=packets[half].pts),
            media_segment(video, packets[half:], number=8, start=packets[half].pts,
                          end=packets[-1].pts + 3600)]
    # Samples are length-prefixed now: the mdat does not start with a start code.
    (mdat,) = [b for b in boxes.walk(segs[0]) if b.type == b"mdat"]
    assert segs[0][mdat.body : mdat.body + 4] != b"\x00\x00\x00\x01"
    out = decode(init + b"".join(segs), "video")
    assert out.logs == []
    assert out.pts == [p.pts for p in packets]
    # A segment without a keyframe (a soft boundary) is still converted from Annex B.
    soft = media_segment(video, packets[1:5], number=9, start=packets[1].pts,
                         end=packets[5].pts)
    (mdat,) = [b for b in boxes.walk(soft) if b.type == b"mdat"]
    assert soft[mdat.body : mdat.body + 4] == struct.pack(">I", len(packets[1].data) - 4)


# -- media segments ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["flv", "flv0", "ts"])  # B-frames, none, MPEG-TS input
def test_video_segment_boxes_and_timing(clips: dict[str, Clip], name: str) -> None:
    clip = clips[name]
    segs = cut(clip)
    assert len(segs) == 2
    datas = mux_all(clip, "video", segs)
    for s, seg in zip(segs, datas, strict=True):
        assert [b.type for b in boxes.walk(seg)] == [b"styp", b"moof", b"mdat"]
        major, compat = brands(seg, b"styp")
        assert major == b"msdh" and b"cmfs" in compat
        assert len(boxes.find(seg, "moof")) == 1
        assert mfhd_of(seg) == s.number
        assert tfdt_of(seg) == s.video[0].dts
        samples = one_traf(seg)
        assert len(samples) == len(s.video)
        assert sum(x.duration for x in samples) == s.end - s.start
        assert all(x.duration > 0 for x in samples)
        assert samples[0].sync and not any(x.sync for x in samples[1:])
        assert [x.dts for x in samples] == [p.dts for p in s.video]
        assert [x.pts for x in samples] == [p.pts for p in s.video]
        assert [x.size for x in samples] == [len(p.data) for p in s.video] or name == "ts"
        assert b"Lavf" not in seg
    # tfdt continues exactly where the previous segment's samples end.
    first = one_traf(datas[0])
    assert tfdt_of(datas[1]) == first[-1].dts + first[-1].duration
    reorder = {s.start - s.video[0].dts for s in segs}
    assert reorder == ({0} if name == "flv0" else {7200})


@pytest.mark.parametrize("name", ["flv", "ts"])
def test_a_segment_of_several_gops_is_one_fragment(clips: dict[str, Clip], name: str) -> None:
    """A grid segment spans several keyframes (D = 6 s, GOP 2 s): still one moof."""
    clip = clips[name]
    v = sorted(clip.packets["video"], key=lambda p: p.dts)
    keys = [p for p in v if p.keyframe]
    assert len(keys) >= 3
    start, end = keys[0].pts, keys[-1].pts
    own = [p for p in v if start <= p.pts < end or (p.dts >= v[0].dts and p.pts < end
                                                    and p.dts < keys[-1].dts)]
    seg = fmp4.media_segment(clip.track("video"), own, number=5, start=start, end=end)
    assert [b.type for b in boxes.walk(seg)] == [b"styp", b"moof", b"mdat"]
    samples = one_traf(seg)
    assert len(samples) == len(own)
    assert [x.sync for x in samples] == [p.keyframe for p in own]
    assert sum(x.duration for x in samples) == end - start


def test_audio_segment_timing(clips: dict[str, Clip]) -> None:
    clip = clips["ts"]
    track = clip.track("audio")
    segs = cut(clip)
    datas = mux_all(clip, "audio", segs)
    for s, seg in zip(segs, datas, strict=True):
        assert [b.type for b in boxes.walk(seg)] == [b"styp", b"moof", b"mdat"]
        assert mfhd_of(seg) == s.number
        assert tfdt_of(seg) == audio_ts(track, s.audio[0].dts)
        samples = one_traf(seg)
        assert len(samples) == len(s.audio)
        assert [x.dts for x in samples] == [audio_ts(track, p.dts) for p in s.audio]
        assert samples[-1].duration == 1024
        assert all(x.sync for x in samples)
    # ADTS headers are gone: each sample is the raw access unit.
    assert one_traf(datas[0])[0].size == len(segs[0].audio[0].data) - 7


def test_mfhd_is_the_number_mod_2_32_and_never_0(clips: dict[str, Clip]) -> None:
    clip = clips["flv"]
    track = clip.track("video")
    s = cut(clip)[0]
    for number, seq in ((1, 1), (2**31 - 1, 2**31 - 1), (2**31 + 5, 2**31 + 5),
                        (2**32 - 1, 2**32 - 1), (2**32, 1), (2**32 + 7, 7), (0, 1)):
        seg = media_segment(track, s.video, number=number, start=s.start, end=s.end)
        assert mfhd_of(seg) == seq, number
    a = media_segment(track, s.video, number=2**32 + 7, start=s.start, end=s.end)
    b = media_segment(track, s.video, number=7, start=s.start, end=s.end)
    assert a == b  # only the number differs, and it wraps


def test_last_video_duration_falls_back_to_the_previous_delta(clips: dict[str, Clip]) -> None:
    clip = clips["flv"]
    s = cut(clip)[0]
    seg = media_segment(clip.track("video"), s.video, number=s.number, start=s.start,
                        end=s.start + 1)  # an end too early for the rule
    samples = one_traf(seg)
    assert samples[-1].duration == samples[-2].duration == 3600


@pytest.mark.parametrize("name", ["flv", "ts", "mp4"])
def test_init_and_two_segments_decode_with_grid_pts(clips: dict[str, Clip], name: str,
                                                    capture: None) -> None:
    clip = clips[name]
    segs = cut(clip)
    for kind in ("video", "audio"):
        track = clip.track(kind)
        data = init_segment(track) + b"".join(mux_all(clip, kind, segs))
        out = decode(data, kind)
        assert out.logs == []
        if kind == "video":
            assert out.pts == sorted(p.pts for s in segs for p in s.video)
        else:
            packets = [p for s in segs for p in s.audio]
            assert out.pts == [audio_ts(track, p.pts) for p in packets]
            assert out.samples == 1024 * len(packets)


def test_ffprobe_reads_init_and_segments_cleanly(clips: dict[str, Clip], tmp_path: Path
                                                 ) -> None:
    assert shutil.which("ffprobe"), "ffprobe missing: run bash scripts/setup.sh"
    # Audio from the MPEG-TS clip: its 90 kHz times are exact, so its segments abut
    # (FLV's millisecond times jitter by a few samples at segment boundaries).
    for name, kind in (("flv", "video"), ("ts", "video"), ("ts", "audio")):
        clip = clips[name]
        segs = cut(clip)
        track = clip.track(kind)
        path = tmp_path / f"{name}-{kind}.mp4"
        path.write_bytes(init_segment(track) + b"".join(mux_all(clip, kind, segs)))
        run = subprocess.run(
            ["ffprobe", "-v", "warning", "-show_entries", "packet=pts,dts,duration",
             "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
        assert run.stderr == ""
        rows: list[tuple[int, int, int | None]] = []
        for line in run.stdout.split():
            pts, dts, duration = line.split(",")
            rows.append((int(pts), int(dts), None if duration == "N/A" else int(duration)))
        packets = [p for s in segs for p in (s.video if kind == "video" else s.audio)]
        assert len(rows) == len(packets)
        expect = ([(p.pts, p.dts) for p in packets] if kind == "video" else
                  [(audio_ts(track, p.pts), audio_ts(track, p.dts)) for p in packets])
        assert [(pts, dts) for pts, dts, _ in rows] == expect
        # Continuous decode times: each packet starts where the previous one ended. (The
        # ffprobe of Debian 12, FFmpeg 5.1, leaves the first AAC packet's duration N/A.)
        known = rows if kind == "video" else rows[1:]
        assert all(a[1] + (a[2] or 0) == b[1] and a[2] for a, b in itertools.pairwise(known))


# -- determinism ---------------------------------------------------------------------------

def digests(path: str) -> list[str]:
    """SHA-256 of every init and media segment of a clip (run in a subprocess too)."""
    clip = load(Path(path))
    out = []
    for kind in ("video", "audio"):
        out.append(hashlib.sha256(init_segment(clip.track(kind))).hexdigest())
        out += [hashlib.sha256(s).hexdigest() for s in mux_all(clip, kind, cut(clip))]
    return out


def test_same_packets_same_bytes_in_any_order_and_process(clips: dict[str, Clip],
                                                          media: dict[str, Path]) -> None:
    clip = clips["flv"]
    s = cut(clip)[0]
    track = clip.track("video")
    a = media_segment(track, s.video, number=s.number, start=s.start, end=s.end)
    b = media_segment(track, list(reversed(s.video)) + s.audio, number=s.number,
                      start=s.start, end=s.end)  # order and other tracks do not matter
    assert a == b
    here = digests(str(media["flv"]))
    code = ("import sys; from tests.unit.test_mux_fmp4 import digests; "
            "print(' '.join(digests(sys.argv[1])))")
    run = subprocess.run([sys.executable, "-c", code, str(media["flv"])], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.split() == here


def test_aac_from_adts_and_from_asc_gives_the_same_segments(clips: dict[str, Clip],
                                                            capture: None) -> None:
    ts, flv = clips["ts"], clips["flv"]
    adts = ts.packets["audio"]
    # Same access units (the clips are encoded identically), same grid times.
    raw = [replace(p, data=q.data) for p, q in zip(adts, flv.packets["audio"], strict=True)]
    assert [p.data[7:] for p in adts] == [p.data for p in raw]
    start, end = adts[0].pts, adts[-1].pts + 1920
    a = media_segment(ts.track("audio"), adts, number=3, start=start, end=end)
    b = media_segment(flv.track("audio"), raw, number=3, start=start, end=end)
    assert a == b
    for clip, seg in ((ts, a), (flv, b)):
        out = decode(init_segment(clip.track("audio")) + seg, "audio")
        assert out.logs == []
        assert out.samples == 1024 * len(adts)


# -- HEVC ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hevc.mp4", "hevc.ts"])
def test_hevc_is_tagged_hvc1_and_decodes(clips: dict[str, Clip], name: str,
                                         capture: None) -> None:
    clip = hevc(clips, name)
    track = clip.track("video")
    init = init_segment(track)
    (stsd,) = boxes.find(init, "moov/trak/mdia/minf/stbl/stsd")
    assert [b.type for b in boxes.children(init, stsd)] == [b"hvc1"]
    assert boxes.find(init, "moov/trak/mdia/minf/stbl/stsd/hvc1/hvcC")
    assert b"hev1" not in init and b"Lavf" not in init
    segs = cut(clip)
    datas = mux_all(clip, "video", segs)
    for s, seg in zip(segs, datas, strict=True):
        assert tfdt_of(seg) == s.video[0].dts
        assert sum(x.duration for x in one_traf(seg)) == s.end - s.start
    out = decode(init + b"".join(datas), "video")
    assert out.logs == []
    assert out.pts == sorted(p.pts for s in segs for p in s.video)


def test_hevc_codec_string_from_hvcc_and_from_sps_agree(clips: dict[str, Clip]) -> None:
    from_hvcc = codec_string(hevc(clips, "hevc.mp4").track("video"))
    from_sps = codec_string(hevc(clips, "hevc.ts").track("video"))
    # x265 Main, 320x180@25 -> level 2 (general_level_idc 60), progressive frame-only.
    assert from_hvcc == from_sps == "hvc1.1.6.L60.90"


# -- codec strings and support -------------------------------------------------------------

def template(codec: str, extradata: bytes | None) -> object:
    holder = av.open(io.BytesIO(), "w", format="mp4")
    stream = holder.add_stream(codec, rate=48_000 if codec == "aac" else 25)
    if extradata is not None:
        stream.codec_context.extradata = extradata
    return stream


def track_of(codec: str, kind: Kind, extradata: bytes | None, fallback: str = "") -> TrackInfo:
    enc = {"h264": "libx264", "hevc": "libx265", "aac": "aac"}[codec]
    if enc not in av.codecs_available:
        pytest.fail(f"{enc} is not available in this PyAV build")
    return TrackInfo(0, kind, codec, fallback, sample_rate=48_000 if kind == "audio" else 0,
                     channels=2 if kind == "audio" else 0, template=template(enc, extradata))


HVCC_MAIN_L31 = bytes([1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93])
HVCC_MAIN10_HIGH_L150 = bytes([1, 0x22, 0x20, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 150])


@pytest.mark.parametrize(("codec", "kind", "extradata", "first", "expect"), [
    ("h264", "video", bytes.fromhex("0164001fffe1"), None, "avc1.64001F"),
    ("h264", "video", bytes.fromhex("000000016742c01e8c8d4000000168ce3c80"), None,
     "avc1.42C01E"),
    ("h264", "video", None, bytes.fromhex("00000001674d4028aa00000001"), "avc1.4D4028"),
    ("hevc", "video", HVCC_MAIN_L31, None, "hvc1.1.6.L93.B0"),
    ("hevc", "video", HVCC_MAIN10_HIGH_L150, None, "hvc1.2.4.H150.B0"),
    ("aac", "audio", bytes.fromhex("1190"), None, "mp4a.40.2"),
    ("aac", "audio", bytes.fromhex("2b118800"), None, "mp4a.40.5"),
    ("aac", "audio", None, bytes.fromhex("fff15c80000000"), "mp4a.40.2"),  # ADTS header
])
def test_codec_string_table(codec: str, kind: Kind, extradata: bytes | None,
                            first: bytes | None, expect: str) -> None:
    assert codec_string(track_of(codec, kind, extradata), first_keyframe=first) == expect


def test_codec_string_of_real_tracks(clips: dict[str, Clip]) -> None:
    for name in ("flv", "ts", "mp4"):
        assert codec_string(clips[name].track("video")) == "avc1.4D400C"
        assert codec_string(clips[name].track("audio")) == "mp4a.40.2"


def test_unsupported_reason() -> None:
    def info(kind: Kind, codec: str) -> TrackInfo:
        return TrackInfo(0, kind, codec, "")

    assert fmp4.unsupported_reason(info("video", "h264")) is None
    assert fmp4.unsupported_reason(info("video", "hevc")) is None
    assert fmp4.unsupported_reason(info("audio", "aac")) is None
    for kind, codec in (("audio", "mp3"), ("audio", "ac3"), ("audio", "eac3"),
                        ("video", "mpeg2video")):
        reason = fmp4.unsupported_reason(info(kind, codec))  # type: ignore[arg-type]
        assert reason and reason.startswith(f"{codec} {kind} cannot be packaged as CMAF")


def test_errors_are_fmp4_errors(clips: dict[str, Clip]) -> None:
    assert issubclass(Fmp4Error, MuxError)
    clip = clips["flv"]
    track = clip.track("video")
    s = cut(clip)[0]
    with pytest.raises(Fmp4Error, match="no packets"):
        media_segment(track, [], number=1, start=0, end=1)
    with pytest.raises(Fmp4Error, match="empty span"):
        media_segment(track, s.video, number=1, start=s.start, end=s.start)
    dup = [s.video[0], replace(s.video[1], dts=s.video[0].dts)]
    with pytest.raises(Fmp4Error, match="DTS"):
        media_segment(track, dup, number=1, start=s.start, end=s.end)
    with pytest.raises(Fmp4Error, match="mp3"):
        init_segment(TrackInfo(1, "audio", "mp3", "", template=clip.track("audio").template))
    bad = [s.video[0], replace(s.video[1], pts=s.video[1].dts - 1)]  # pts < dts
    with pytest.raises(Fmp4Error) as info:
        media_segment(track, bad, number=1, start=s.start, end=s.end)
    assert isinstance(info.value.__cause__, av.FFmpegError)


def test_opus_works_in_fragmented_mp4(capture: None) -> None:
    if "libopus" not in av.codecs_available:
        pytest.fail("libopus is not available in this PyAV build")
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as ogg:
        enc = ogg.add_stream("libopus", rate=48_000)
        enc.layout = "stereo"
        for i in range(100):
            n = np.arange(960) + i * 960
            s = (0.2 * np.sin(2 * np.pi * 440 * n / 48_000)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([s, s]).T.reshape(1, -1).copy(),
                                               format="flt", layout="stereo")
            frame.sample_rate = 48_000
            frame.pts = i * 960
            for p in enc.encode(frame):
                ogg.mux(p)
        for p in enc.encode(None):
            ogg.mux(p)
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    with av.open(io.BytesIO(buf.getvalue()), "r", format="ogg") as c:
        st = c.streams.audio[0]
        track = TrackInfo(0, "audio", "opus", "Opus", sample_rate=48_000, channels=2,
                          template=holder.add_stream_from_template(st))
        # 48 kHz samples to 90 kHz ticks: * 15 / 8 (exact for 20 ms frames).
        packets = [GridPacket(0, "audio", (p.pts or 0) * 15 // 8 + OFFSET,
                              (p.dts or 0) * 15 // 8 + OFFSET, (p.duration or 0) * 15 // 8,
                              True, bytes(p))
                   for p in c.demux(st) if p.size and p.pts is not None and p.pts >= 0]
    assert fmp4.unsupported_reason(track) is None and codec_string(track) == "Opus"
    init = init_segment(track)
    assert boxes.find(init, "moov/trak/mdia/minf/stbl/stsd/Opus/dOps")
    segs = [media_segment(track, packets[i : i + 40], number=i, start=packets[i].pts,
                          end=packets[i + 40].pts) for i in (0, 40)]
    assert tfdt_of(segs[1]) == audio_ts(track, packets[40].dts)
    out = decode(init + b"".join(segs), "audio")
    assert out.logs == []
    # The decoder drops the Opus pre-skip (dOps) from the first frame it decodes.
    assert len(out.pts) == 80 and out.pts[1:] == [audio_ts(track, p.pts) for p in packets[1:80]]
