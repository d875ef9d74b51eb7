"""The VOD HTTP edge in-process: two nodes over copies of the same files, byte-identical."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import av
import m3u8
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fixtures.vod import make_clip, vod_media
from sidecar.errors import BadRequest, NotFound
from sidecar.vod.routes import vod_router
from sidecar.vod.service import VodRequest, VodService, parse_request, safe_relative

D = 180_000  # 2 s
NS = "{urn:mpeg:dash:schema:mpd:2011}"
PLAYABLE = ["clip.mp4", "faststart.mp4", "clip.mkv", "clip.ts", "nobframes.mp4", "audio.m4a"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    files = vod_media(tmp_path_factory.mktemp("vod-routes-media"))
    folder = files["mp4"].parent
    # Renditions of clip.mp4: smaller and without B-frames (another grid offset), aligned;
    # and one with 3 s GOPs, not aligned.
    files["lo.mp4"] = make_clip(folder / "lo.mp4", 6, size=(160, 90), bframes=0)
    files["gop3.mp4"] = make_clip(folder / "gop3.mp4", 6, gop_seconds=3)
    return files


def make_root(root: Path, media: dict[str, Path], mtime: int) -> Path:
    (root / "movies").mkdir(parents=True)
    for path in media.values():
        target = root / "movies" / path.name
        shutil.copy(path, target)
        os.utime(target, ns=(mtime, mtime))
    return root


def client(root: Path, cache: Path) -> Iterator[TestClient]:
    service = VodService([root], cache, D)
    app = FastAPI()
    app.include_router(vod_router(service))
    with TestClient(app) as c:
        c.service = service  # type: ignore[attr-defined]
        yield c
    service.close()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]
          ) -> Iterator[tuple[TestClient, TestClient]]:
    base = tmp_path_factory.mktemp("vod-routes")
    a_root = make_root(base / "a", media, 1_600_000_000 * 10**9)
    b_root = make_root(base / "b", media, 1_700_000_000 * 10**9 + 123)
    a, b = client(a_root, base / "a-cache"), client(b_root, base / "b-cache")
    yield next(a), next(b)
    for gen in (a, b):
        gen.close()


def crawl(c: TestClient, base: str) -> dict[str, bytes]:
    """Every URL reachable from the entry playlists and the MPD, with its body."""
    seen: dict[str, bytes] = {}

    def get(url: str) -> bytes:
        r = c.get(url)
        assert r.status_code == 200, (url, r.text)
        seen[url] = r.content
        return r.content

    for entry in ("playlist.m3u8", "cmaf.m3u8"):
        text = get(f"{base}/{entry}").decode()
        pl = m3u8.loads(text)
        children = [p.uri for p in pl.playlists] + [m.uri for m in pl.media if m.uri]
        for child in children:
            media_url = f"{base}/{child}"
            folder = media_url.rsplit("/", 1)[0]
            mp = m3u8.loads(get(media_url).decode())
            for init in {s.init_section.uri for s in mp.segments if s.init_section}:
                get(f"{folder}/{init}")
            for s in mp.segments:
                get(f"{folder}/{s.uri}")
    mpd = ET.fromstring(get(f"{base}/manifest.mpd"))
    for template in mpd.iter(f"{NS}SegmentTemplate"):
        get(f"{base}/{template.get('initialization')}")
        count = sum(1 + int(e.get("r", "0")) for e in template.iter(f"{NS}S"))
        first = int(template.get("startNumber", "1"))
        media_t = template.get("media", "")
        for n in range(first, first + count):
            get(f"{base}/{media_t.replace('$Number$', str(n))}")
    return seen


@pytest.mark.parametrize("name", PLAYABLE)
def test_two_nodes_serve_identical_bytes(nodes: tuple[TestClient, TestClient],
                                         name: str) -> None:
    a, b = nodes
    base = f"/vod/movies/{name}"
    got_a, got_b = crawl(a, base), crawl(b, base)
    assert got_a.keys() == got_b.keys()
    segments = [u for u in got_a if u.endswith((".ts", ".m4s"))]
    assert len(segments) >= 3
    for url, body in got_a.items():
        assert got_b[url] == body, url
        ra, rb = a.head(url), b.head(url)
        assert ra.headers["etag"] == rb.headers["etag"] == (
            '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def test_mpd_lists_the_cmaf_segments(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    mpd = a.get("/vod/movies/clip.mp4/manifest.mpd")
    assert mpd.headers["content-type"] == "application/dash+xml"
    body = mpd.text
    assert 'type="static"' in body and 'media="video/$Number$.m4s"' in body
    assert 'startNumber="0"' in body and 'mediaPresentationDuration="PT6.016S"' in body
    for n in range(3):
        assert a.get(f"/vod/movies/clip.mp4/video/{n}.m4s").status_code == 200
        assert a.get(f"/vod/movies/clip.mp4/audio/{n}.m4s").status_code == 200
    assert a.get("/vod/movies/clip.mp4/video/3.m4s").status_code == 404


def test_wowza_aliases(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    for entry in ("playlist.m3u8", "manifest.mpd", "src/media.m3u8", "src/1.ts"):
        plain = a.get(f"/vod/movies/clip.mp4/{entry}")
        alias = a.get(f"/vod/_definst_/mp4:movies/clip.mp4/{entry}")
        assert alias.status_code == 200 and alias.content == plain.content


def test_multivariant_is_measured(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    ts = m3u8.loads(a.get("/vod/movies/clip.mp4/playlist.m3u8").text).playlists[0]
    info = ts.stream_info
    assert info.resolution == (320, 180) and info.frame_rate == 25.0
    assert info.codecs.startswith("avc1.") and info.codecs.endswith(",mp4a.40.2")
    sizes = [len(a.get(f"/vod/movies/clip.mp4/src/{n}.ts").content) for n in range(3)]
    durations = [2.0, 2.0, 2.016]
    peak = max(s * 8 / d for s, d in zip(sizes, durations, strict=True))
    assert peak <= info.bandwidth <= 1.1 * peak  # an upper bound, within 10 %
    assert info.average_bandwidth <= info.bandwidth
    cmaf = m3u8.loads(a.get("/vod/movies/clip.mp4/cmaf.m3u8").text)
    assert cmaf.media[0].type == "AUDIO" and cmaf.media[0].uri == "audio/media.m3u8"
    assert cmaf.playlists[0].uri == "video/media.m3u8"
    media = m3u8.loads(a.get("/vod/movies/clip.mp4/src/media.m3u8").text)
    assert media.playlist_type == "vod" and media.is_endlist
    assert [s.duration for s in media.segments] == durations
    assert [s.uri for s in media.segments] == ["0.ts", "1.ts", "2.ts"]


def test_http_semantics(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    url = "/vod/movies/clip.mp4/src/1.ts"
    full = a.get(url)
    assert full.headers["content-type"] == "video/mp2t"
    assert full.headers["cache-control"] == "public, max-age=86400"
    assert full.headers["accept-ranges"] == "bytes"
    etag = full.headers["etag"]
    assert a.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert a.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    part = a.get(url, headers={"Range": "bytes=188-375"})
    assert part.status_code == 206 and part.content == full.content[188:376]
    assert part.headers["content-range"] == f"bytes 188-375/{len(full.content)}"
    tail = a.get(url, headers={"Range": "bytes=-188"})
    assert tail.status_code == 206 and tail.content == full.content[-188:]
    assert a.get(url, headers={"Range": f"bytes={len(full.content)}-"}).status_code == 416
    stale = a.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == full.content
    head = a.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == etag
    playlist = a.get("/vod/movies/clip.mp4/playlist.m3u8")
    assert playlist.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert playlist.headers["cache-control"] == "public, max-age=60"
    init = a.get("/vod/movies/clip.mp4/video/init-0.mp4")
    assert init.headers["content-type"] == "video/mp4" and init.content[4:8] == b"ftyp"


@pytest.mark.parametrize(("url", "status", "words"), [
    ("/vod/movies/text.mp4/playlist.m3u8", 415, "text.mp4: not a media file"),
    ("/vod/movies/mpeg4.mp4/playlist.m3u8", 415, "mpeg4"),
    ("/vod/movies/truncated.mp4/playlist.m3u8", 422, "truncated.mp4: truncated"),
    ("/vod/movies/no-moov.mp4/src/0.ts", 422, "no-moov.mp4: MP4 file"),
    ("/vod/movies/audio.mp3/cmaf.m3u8", 415, "mp3 audio cannot be packaged as CMAF"),
    ("/vod/movies/audio.mp3/manifest.mpd", 415, "mp3"),
    ("/vod/movies/missing.mp4/playlist.m3u8", 404, "no such file"),
    ("/vod/movies/clip.mp4/src/99.ts", 404, "no segment 99"),
    ("/vod/movies/clip.mp4/other.m3u8", 404, "no such VOD resource"),
    ("/vod/movies/audio.m4a/video/media.m3u8", 415, "has no video track"),
    ("/vod/movies/%2e%2e/secret.mp4/playlist.m3u8", 400, "not allowed"),
    ("/vod/movies/%252e%252e/secret.mp4/playlist.m3u8", 400, "not allowed"),
    ("/vod//etc/passwd/playlist.m3u8", 400, "absolute"),
    ("/vod/movies/a%00b.mp4/playlist.m3u8", 400, "NUL"),
    ("/vod/movies/a%5Cb.mp4/playlist.m3u8", 400, "backslash"),
])
def test_errors_answer_json_with_a_reason(nodes: tuple[TestClient, TestClient], url: str,
                                          status: int, words: str) -> None:
    a, _ = nodes
    r = a.get(url)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_mp3_file_still_has_ts(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    assert a.get("/vod/movies/audio.mp3/playlist.m3u8").status_code == 200
    assert a.get("/vod/movies/audio.mp3/src/0.ts").content[0] == 0x47


@pytest.mark.parametrize(("path", "ok"), [
    ("movies/a.mp4", True),
    ("a b/c.mkv", True),
    ("..", False), ("a/../b.mp4", False), ("./a.mp4", False), ("a//b.mp4", False),
    ("/abs.mp4", False), ("a/%2e%2e/b.mp4", False), ("a/%2E%2E/b.mp4", False),
    ("a/%252e%252e/b.mp4", False), ("a%2fb/../c", False), ("a\x00b", False),
    ("a\\..\\b", False), ("", False),
])
def test_safe_relative(path: str, ok: bool) -> None:
    if ok:
        assert str(safe_relative(path)) == path
    else:
        with pytest.raises(BadRequest):
            safe_relative(path)


@pytest.mark.parametrize(("rest", "files", "member", "res"), [
    ("a.mp4/playlist.m3u8", ("a.mp4",), None, "playlist.m3u8"),
    ("d/a.mp4/src/12.ts", ("d/a.mp4",), 0, "src/12.ts"),
    ("d/a.mp4/video/init-0.mp4", ("d/a.mp4",), 0, "video/init-0.mp4"),
    ("_definst_/mp4:d/a.mp4/manifest.mpd", ("d/a.mp4",), None, "manifest.mpd"),
    ("x/playlist.m3u8/a.mp4/cmaf.m3u8", ("x/playlist.m3u8/a.mp4",), None, "cmaf.m3u8"),
    ("d/,a.mp4,b.mp4,.urlset/playlist.m3u8", ("d/a.mp4", "d/b.mp4"), None, "playlist.m3u8"),
    ("d/m_,360,720,.mp4.urlset/1/src/3.ts", ("d/m_360.mp4", "d/m_720.mp4"), 1, "src/3.ts"),
    ("_definst_/mp4:,a.mp4,.urlset/0/video/init-0.mp4", ("a.mp4",), 0, "video/init-0.mp4"),
])
def test_parse_request(rest: str, files: tuple[str, ...], member: int | None,
                       res: str) -> None:
    assert parse_request(rest) == VodRequest(files, member, res)


@pytest.mark.parametrize("rest", ["a.mp4/x.m3u8", "a.mp4/src/x.ts",
                                  "d/,a.mp4,.urlset/2/src/0.ts"])
def test_parse_request_refuses(rest: str) -> None:
    with pytest.raises(NotFound):
        parse_request(rest)


def test_symlinks_may_not_leave_the_root(tmp_path: Path, media: dict[str, Path]) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(media["mp4"], outside / "secret.mp4")
    shutil.copy(media["mp4"], root / "inside.mp4")
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    (root / "alias.mp4").symlink_to(root / "inside.mp4")
    (root / "dir").symlink_to(outside)
    gen = client(root, tmp_path / "cache")
    c = next(gen)
    assert c.get("/vod/alias.mp4/playlist.m3u8").status_code == 200
    for url in ("/vod/escape.mp4/playlist.m3u8", "/vod/dir/secret.mp4/playlist.m3u8"):
        r = c.get(url)
        assert r.status_code == 404 and "outside the VOD root" in r.json()["error"]
    gen.close()


def test_a_file_that_changes_while_served_gets_new_etags(tmp_path: Path,
                                                         media: dict[str, Path]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(media["mp4"], root / "v.mp4")
    gen = client(root, tmp_path / "cache")
    c = next(gen)
    before = {u: c.get(f"/vod/v.mp4/{u}") for u in ("playlist.m3u8", "src/0.ts",
                                                     "video/0.m4s", "src/media.m3u8")}
    assert c.get("/vod/v.mp4/src/0.ts").headers["etag"] == before["src/0.ts"].headers["etag"]
    service: VodService = c.service  # type: ignore[attr-defined]
    assert service.indexes.stats.built == 1
    make_clip(root / "v.mp4", 4, size=(256, 144))  # replaced in place
    after = {u: c.get(f"/vod/v.mp4/{u}") for u in before}
    for u in before:
        assert after[u].status_code == 200
        assert after[u].headers["etag"] != before[u].headers["etag"], u
    assert "RESOLUTION=256x144" in after["playlist.m3u8"].text
    assert service.indexes.stats.built == 2
    gen.close()


GROUP = "/vod/movies/,clip.mp4,lo.mp4,.urlset"


def test_two_nodes_serve_identical_rendition_groups(nodes: tuple[TestClient, TestClient]
                                                    ) -> None:
    a, b = nodes
    got_a, got_b = crawl(a, GROUP), crawl(b, GROUP)
    assert got_a == got_b
    assert f"{GROUP}/1/src/2.ts" in got_a and f"{GROUP}/1/video/init-0.mp4" in got_a


def test_rendition_group_manifests(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    ts = m3u8.loads(a.get(f"{GROUP}/playlist.m3u8").text)
    assert [p.uri for p in ts.playlists] == ["0/src/media.m3u8", "1/src/media.m3u8"]
    assert [p.stream_info.resolution for p in ts.playlists] == [(320, 180), (160, 90)]
    cmaf = m3u8.loads(a.get(f"{GROUP}/cmaf.m3u8").text)
    assert [p.uri for p in cmaf.playlists] == ["0/video/media.m3u8", "1/video/media.m3u8"]
    assert [m.uri for m in cmaf.media] == ["0/audio/media.m3u8"]
    mpd = ET.fromstring(a.get(f"{GROUP}/manifest.mpd").content)
    sets = mpd.findall(f"{NS}Period/{NS}AdaptationSet")
    assert [s.get("contentType") for s in sets] == ["video", "audio"]
    assert [r.get("id") for r in sets[0].findall(f"{NS}Representation")] == ["video-0",
                                                                             "video-1"]
    assert sets[0].get("maxWidth") == "320"
    # Same cut in every rendition: the same start times, even though lo.mp4 has no B-frames
    # (one common grid offset for the group).
    # (VOD playlists carry no PROGRAM-DATE-TIME: the cut is read from the segments' PTS.)
    starts = [[_first_video_pts(a.get(f"{GROUP}/{i}/src/{s.uri}").content) for s in m3u8.loads(
        a.get(f"{GROUP}/{i}/src/media.m3u8").text).segments] for i in (0, 1)]
    assert starts[0] == starts[1] and len(starts[0]) == 3
    alone = _first_video_pts(a.get("/vod/movies/lo.mp4/src/0.ts").content)
    assert alone != starts[1][0]  # its own offset when alone


def _first_video_pts(ts: bytes) -> int:
    with av.open(io.BytesIO(ts), format="mpegts") as c:
        return min(p.pts for p in c.demux(video=0) if p.pts is not None)


def test_unaligned_renditions_are_refused(nodes: tuple[TestClient, TestClient]) -> None:
    a, _ = nodes
    r = a.get("/vod/movies/,clip.mp4,gop3.mp4,.urlset/playlist.m3u8")
    assert r.status_code == 422
    assert "not keyframe-aligned: segment 1" in r.json()["error"]
    assert "clip.mp4" in r.json()["error"] and "gop3.mp4" in r.json()["error"]
