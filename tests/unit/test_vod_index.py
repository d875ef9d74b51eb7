"""The VOD packet index: grid times per container, track metadata, errors, the cache."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fixtures.vod import make_clip, vod_media
from sidecar.vod.index import (
    BrokenMedia,
    FileKey,
    IndexCache,
    MediaError,
    PacketIndex,
    UnsupportedMedia,
    build_index,
)

F = 3_600  # 25 fps frame in ticks


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return vod_media(tmp_path_factory.mktemp("vod-index"))


@pytest.fixture(scope="module")
def reference(media: dict[str, Path]) -> PacketIndex:
    return build_index(media["mp4"])


def track_arrays(ix: PacketIndex, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    meta = ix.meta(kind)
    assert meta is not None
    rows = ix.rows_of(meta.track)
    return ix.pts[rows], ix.dts[rows], ix.keyframe[rows]


@pytest.mark.parametrize("name", ["mp4", "faststart.mp4", "mkv", "ts", "wrapped.ts"])
def test_every_container_gives_the_same_grid(media: dict[str, Path], reference: PacketIndex,
                                             name: str) -> None:
    ix = build_index(media[name])
    assert int(ix.dts.min()) == 0  # the one offset puts the first DTS at exactly 0
    for kind in ("video", "audio"):
        pts, dts, key = track_arrays(ix, kind)
        assert (np.diff(dts) > 0).all() and (dts <= pts).all()
        ref_pts, ref_dts, ref_key = track_arrays(reference, kind)
        assert len(pts) == len(ref_pts)
        if kind == "video":
            # Matroska has no DTS for B-frames: rebuilt, it equals the MP4's.
            assert (pts == ref_pts).all() and (dts == ref_dts).all()
            assert (key == ref_key).all()
        else:  # Matroska stores milliseconds
            assert np.abs(pts - ref_pts).max() <= (90 if name == "mkv" else 0)


def test_reference_timing(reference: PacketIndex) -> None:
    v_pts, v_dts, v_key = track_arrays(reference, "video")
    a_pts, _, _ = track_arrays(reference, "audio")
    # 2 B-frames: the first DTS is two frames before the first PTS; the offset makes it 0.
    assert reference.offset == 2 * F
    assert v_dts[0] == 0 and v_pts.min() == 2 * F
    # AAC priming (1024 samples before the video) is kept, not cut.
    assert a_pts[0] == 2 * F - 1_920
    assert np.flatnonzero(v_key).tolist() == [0, 50, 100]
    assert len(v_pts) == 150 and len(a_pts) == 283


def test_track_metadata(media: dict[str, Path], reference: PacketIndex) -> None:
    video, audio = reference.meta("video"), reference.meta("audio")
    assert video is not None and audio is not None
    assert (video.track, video.codec, video.width, video.height, video.frame_rate) == (
        0, "h264", 320, 180, "25")
    assert video.codec_string.startswith("avc1.") and video.cmaf_codec == video.codec_string
    assert (audio.track, audio.codec, audio.sample_rate, audio.channels, audio.cmaf_codec) == (
        1, "aac", 48_000, 2, "mp4a.40.2")
    assert reference.driver == video
    mp3 = build_index(media["audio.mp3"])
    only = mp3.tracks[0]
    assert mp3.driver == only and only.kind == "audio" and only.codec == "mp3"
    assert only.cmaf_codec == "" and "mp3" in only.cmaf_unsupported


@pytest.mark.parametrize(("name", "error", "words"), [
    ("truncated.mp4", BrokenMedia, "truncated: video track has"),
    ("no-moov.mp4", BrokenMedia, "MP4 file that FFmpeg cannot read"),
    ("mpeg4.mp4", UnsupportedMedia, "mpeg4"),
    ("text.mp4", UnsupportedMedia, "not a media file"),
])
def test_files_that_cannot_be_packaged(media: dict[str, Path], name: str,
                                       error: type[MediaError], words: str) -> None:
    with pytest.raises(error) as info:
        build_index(media[name])
    assert words in str(info.value) and name in str(info.value)


def test_arrays_are_read_only(reference: PacketIndex) -> None:
    with pytest.raises(ValueError):
        reference.pts[0] = 1


def test_cache_reuses_indexes_across_instances(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "a.mp4"
    shutil.copy(media["mp4"], path)
    first = IndexCache(tmp_path / "cache")
    a = first.get(path)
    assert first.get(path) is a
    assert (first.stats.built, first.stats.memory_hits) == (1, 1)
    # A restarted node: loaded from disk, never demuxed again.
    second = IndexCache(tmp_path / "cache")
    b = second.get(path)
    assert (second.stats.built, second.stats.loaded) == (0, 1)
    assert b.key == a.key and b.tracks == a.tracks and b.offset == a.offset
    for name in ("track", "pts", "dts", "duration", "raw", "size", "keyframe", "pos"):
        assert (getattr(a, name) == getattr(b, name)).all()
    assert list((tmp_path / "cache").rglob("*.npz"))


def test_a_changed_file_gets_a_new_index(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "a.mp4"
    shutil.copy(media["mp4"], path)
    cache = IndexCache(tmp_path / "cache")
    old = cache.get(path)
    make_clip(path, 4)  # rewritten in place: other size and mtime
    new = cache.get(path)
    assert new.key != old.key and len(new) < len(old)
    assert cache.stats.built == 2
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched only
    assert cache.get(path).key != new.key and cache.stats.built == 3


def test_negative_cache_expires_when_the_file_changes(tmp_path: Path,
                                                      media: dict[str, Path]) -> None:
    path = tmp_path / "x.mp4"
    shutil.copy(media["truncated.mp4"], path)
    cache = IndexCache(tmp_path / "cache")
    with pytest.raises(BrokenMedia):
        cache.get(path)
    with pytest.raises(BrokenMedia, match="truncated"):
        cache.get(path)
    assert (cache.stats.built, cache.stats.negative_hits) == (0, 1)
    # Remembered on disk too: a restarted node does not demux the broken file again.
    restarted = IndexCache(tmp_path / "cache")
    with pytest.raises(BrokenMedia, match="truncated"):
        restarted.get(path)
    assert restarted.stats.negative_hits == 1
    shutil.copy(media["mp4"], path)  # fixed: new size and mtime
    assert len(restarted.get(path)) == 433 and restarted.stats.built == 1


def test_unreadable_cache_file_is_rebuilt(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "a.mp4"
    shutil.copy(media["mp4"], path)
    IndexCache(tmp_path / "cache").get(path)
    (cached,) = (tmp_path / "cache").rglob("*.npz")
    cached.write_bytes(b"garbage")
    again = IndexCache(tmp_path / "cache")
    assert len(again.get(path)) == 433 and again.stats.built == 1


def test_concurrent_requests_build_once(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "a.mkv"
    shutil.copy(media["mkv"], path)
    cache = IndexCache(None)
    got: list[PacketIndex] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.stats.built == 1 and len({id(i) for i in got}) == 1


def test_key_is_path_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"1234")
    key = FileKey.of(path)
    assert (key.path, key.size) == (str(path), 4)
    assert key.digest == FileKey.of(path).digest
    os.utime(path, ns=(0, 5))
    assert FileKey.of(path).digest != key.digest
