"""The CMAF edge: fMP4 HLS playlists, the MPD, init and media segments, from one timeline."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import m3u8
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from sidecar.clock import ManualClock
from sidecar.model import Epoch, Part, SegmentRecord, TrackDesc
from sidecar.node import Node, StreamRuntime
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.server import GAP_CMAF, create_app
from sidecar.settings import StreamSpec, load_settings
from sidecar.storage import StreamFiles
from sidecar.store.sqlite import SqliteStore

S = 90_000
D = 6 * S
N0 = 300_000_000
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
INITS = {"video": b"\x00\x00\x00\x08ftypVIDEO-INIT", "audio": b"\x00\x00\x00\x08ftypAUDIO-INIT"}


def _part(name: str, data: bytes) -> Part:
    return Part(name, hashlib.sha256(data).hexdigest(), len(data))


def epoch(index: int, *, audio_codec: str = "aac") -> Epoch:
    cmaf = audio_codec == "aac"
    tracks = (
        TrackDesc("video", "avc1.64001F", 640, 360, "25",
                  init=_part("video", INITS["video"]) if cmaf else None),
        TrackDesc("audio", "mp4a.40.2" if cmaf else "mp4a.40.34", sample_rate=48_000,
                  channels=2, init=_part("audio", INITS["audio"]) if cmaf else None,
                  unsupported="" if cmaf else "mp3 audio cannot be packaged as CMAF"),
    )
    return Epoch("live/demo", index, 0, 0, 0, 0, "a", "avc1.64001F,mp4a.40.2", "640x360",
                 tracks)


def make_node(root: Path, name: str, store: SqliteStore, clock: ManualClock,
              outputs: tuple[str, ...] = ("ts", "cmaf")) -> Node:
    settings = load_settings(node_id=name, data_dir=root / name, segment_wait=0.2,
                             streams=["live/demo=synthetic:"])
    parts = (("ts",) if "ts" in outputs else ()) + (
        ("video", "audio") if "cmaf" in outputs else ())
    files = StreamFiles(root / name / "segs", parts)
    pipe = StreamPipeline(PipelineConfig("live/demo", name, D, outputs=outputs), None,  # type: ignore[arg-type]
                          store, files, clock)
    spec = StreamSpec.parse("live/demo=synthetic:")
    return Node(settings, store, clock, {"live/demo": StreamRuntime(spec, pipe)})


def blobs(n: int) -> dict[str, bytes]:
    return {"ts": bytes([n % 256]) * 1880, "video": b"V" * (9000 + n % 7),
            "audio": b"A" * (1500 + n % 3)}


def publish(nodes: list[Node], n: int, e: int = 0, *, parts: tuple[str, ...] = (
        "ts", "video", "audio")) -> None:
    data = {k: v for k, v in blobs(n).items() if k in parts}
    record = SegmentRecord("live/demo", n, e, n * D + 1800, D,
                           tuple(_part(k, v) for k, v in sorted(data.items())), (n + 1) * D, "a")
    nodes[0].store.put_segment(record)
    for node in nodes:
        files = node.streams["live/demo"].files
        for k, v in data.items():
            if k in files.dirs:
                files.write(k, n, v)


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Node, Node, ManualClock]:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock((N0 + 8) * D + 2 * S)
    a, b = make_node(tmp_path, "a", store, clock), make_node(tmp_path, "b", store, clock)
    store.create_epoch(epoch(0))
    store.create_epoch(epoch(1))
    for node in (a, b):
        for kind, data in INITS.items():  # as each node's pipeline writes them
            node.streams["live/demo"].files.inits[kind].write(0, data)
            node.streams["live/demo"].files.inits[kind].write(1, data)
    for n in range(N0, N0 + 4):
        publish([a, b], n)
    # N0 + 4: a hole; then epoch 1 starts.
    for n in range(N0 + 5, N0 + 8):
        publish([a, b], n, 1)
    return a, b, clock


CMAF_PATHS = ["/live/demo/cmaf.m3u8", "/live/demo/video/media.m3u8",
              "/live/demo/audio/media.m3u8", "/live/demo/manifest.mpd",
              "/live/demo/video/init-0.mp4", f"/live/demo/audio/{N0 + 2}.m4s",
              f"/live/demo/video/t{(N0 + 6) * D + 1800}.m4s"]


@pytest.mark.parametrize("path", CMAF_PATHS)
def test_cmaf_answers_identical_across_nodes(cluster: tuple[Node, Node, ManualClock],
                                             path: str) -> None:
    a, b, _ = cluster
    with TestClient(create_app(a, run_pipelines=False)) as ca, \
            TestClient(create_app(b, run_pipelines=False)) as cb:
        ra, rb = ca.get(path), cb.get(path)
        assert ra.status_code == rb.status_code == 200, ra.text
        assert ra.content == rb.content
        assert ra.headers["etag"] == rb.headers["etag"]


def test_fmp4_playlists(cluster: tuple[Node, Node, ManualClock]) -> None:
    a, _, _ = cluster
    with TestClient(create_app(a, run_pipelines=False)) as c:
        top = c.get("/live/demo/cmaf.m3u8")
        assert top.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        mv = m3u8.loads(top.text)
        assert "#EXT-X-VERSION:7" in top.text
        (variant,) = mv.playlists
        assert variant.uri == "video/media.m3u8"
        info = variant.stream_info
        assert info.codecs == "avc1.64001F,mp4a.40.2"
        assert info.resolution == (640, 360) and info.frame_rate == 25.0
        assert info.audio == "audio" and info.average_bandwidth <= info.bandwidth
        (audio,) = mv.media
        assert audio.type == "AUDIO" and audio.uri == "audio/media.m3u8"
        assert audio.channels == "2"
        text = c.get("/live/demo/video/media.m3u8").text
        pl = m3u8.loads(text)
        assert "#EXT-X-VERSION:7" in text
        assert [s.uri for s in pl.segments] == [f"{n}.m4s" for n in range(N0, N0 + 8)]
        # One map per epoch: before the first segment and after the discontinuity.
        assert text.count("#EXT-X-MAP") == 2
        assert '#EXT-X-MAP:URI="init-0.mp4"' in text and '#EXT-X-MAP:URI="init-1.mp4"' in text
        assert text.index("init-1.mp4") > text.index("#EXT-X-DISCONTINUITY")
        assert [s.uri for s in pl.segments if s.gap_tag] == [f"{N0 + 4}.m4s"]
        audio_text = c.get("/live/demo/audio/media.m3u8").text
        assert [s.uri for s in m3u8.loads(audio_text).segments] == [s.uri for s in pl.segments]
        # The gap entry's URI: an empty styp, not a 404 (FFmpeg's demuxer asks for it).
        gap = c.get(f"/live/demo/video/{N0 + 4}.m4s")
        assert gap.status_code == 200 and gap.content == GAP_CMAF


def test_mpd_lists_what_the_playlists_list(cluster: tuple[Node, Node, ManualClock]) -> None:
    a, _, clock = cluster
    with TestClient(create_app(a, run_pipelines=False)) as c:
        r = c.get("/live/demo/manifest.mpd")
        assert r.headers["content-type"].startswith("application/dash+xml")
        mpd = etree.fromstring(r.content)
        assert mpd.get("type") == "dynamic"
        assert mpd.get("availabilityStartTime") == "1970-01-01T00:00:00Z"
        periods = mpd.findall("d:Period", NS)
        assert [p.get("id") for p in periods] == ["e0", "e1"]
        video_t = [int(s.get("t")) for s in periods[1].iterfind(
            "d:AdaptationSet[@contentType='video']//d:S", NS) if s.get("t")]
        assert video_t[0] == (N0 + 5) * D + 1800
        timing = mpd.find("d:UTCTiming", NS)
        assert timing is not None and timing.get("value").endswith("/time")
        t = c.get("/time")
        assert t.status_code == 200 and t.text.endswith("Z") and "." in t.text
        # Same instant, same MPD; a later instant lists more and moves publishTime on.
        before = r.content
        assert c.get("/live/demo/manifest.mpd").content == before
        publish([a], N0 + 8, 1)
        clock.advance(D)
        a.streams["live/demo"]._cache = None
        after = c.get("/live/demo/manifest.mpd").content
        assert after != before
        assert etree.fromstring(after).get("publishTime") > mpd.get("publishTime")


def test_segment_without_cmaf_parts_is_not_listed(cluster: tuple[Node, Node, ManualClock]
                                                  ) -> None:
    a, _, clock = cluster
    publish([a], N0 + 8, 1, parts=("ts", "video"))  # no audio in that slot
    clock.advance(D)
    with TestClient(create_app(a, run_pipelines=False)) as c:
        ts = m3u8.loads(c.get("/live/demo/src/media.m3u8").text)
        fmp4 = m3u8.loads(c.get("/live/demo/video/media.m3u8").text)
        assert ts.segments[-1].uri == f"{N0 + 8}.ts"
        assert fmp4.segments[-1].uri == f"{N0 + 7}.m4s"


def test_codec_cmaf_cannot_carry_gives_404_with_reason(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock((N0 + 3) * D + 2 * S)
    a = make_node(tmp_path, "a", store, clock)
    store.create_epoch(epoch(0, audio_codec="mp3"))
    for n in range(N0, N0 + 3):
        publish([a], n, parts=("ts",))
    with TestClient(create_app(a, run_pipelines=False)) as c:
        assert c.get("/live/demo/playlist.m3u8").status_code == 200
        for path in ("/live/demo/cmaf.m3u8", "/live/demo/manifest.mpd",
                     "/live/demo/video/media.m3u8"):
            r = c.get(path)
            assert r.status_code == 404
            assert "mp3 audio cannot be packaged as CMAF" in r.json()["error"]


def test_outputs_turned_off(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock((N0 + 3) * D + 2 * S)
    ts_only = make_node(tmp_path, "a", store, clock, outputs=("ts",))
    cmaf_only = make_node(tmp_path, "b", store, clock, outputs=("cmaf",))
    store.create_epoch(epoch(0))
    for n in range(N0, N0 + 3):
        publish([ts_only, cmaf_only], n)
    with TestClient(create_app(ts_only, run_pipelines=False)) as c:
        assert c.get("/live/demo/playlist.m3u8").status_code == 200
        r = c.get("/live/demo/manifest.mpd")
        assert r.status_code == 404 and "turned off" in r.json()["error"]
        assert c.get(f"/live/demo/video/{N0}.m4s").status_code == 404
    with TestClient(create_app(cmaf_only, run_pipelines=False)) as c:
        assert c.get("/live/demo/manifest.mpd").status_code == 200
        r = c.get("/live/demo/playlist.m3u8")
        assert r.status_code == 404 and "turned off" in r.json()["error"]
        assert c.get(f"/live/demo/src/{N0}.ts").status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/live/demo/video/abc.m4s", 400),
        ("/live/demo/video/init-x.mp4", 400),
        ("/live/demo/video/1.ts", 400),
        ("/live/demo/subtitles/media.m3u8", 404),
        ("/live/demo/video/init-7.mp4", 404),  # no such epoch
        (f"/live/demo/video/t{N0 * D + 1}.m4s", 404),  # no segment starts there
        ("/live/demo/video/..%2F..%2Ftimeline.sqlite3", 404),
        ("/live/demo/audio/123.m4s", 404),
    ],
)
def test_bad_cmaf_paths(cluster: tuple[Node, Node, ManualClock], path: str,
                        status: int) -> None:
    a, _, _ = cluster
    with TestClient(create_app(a, run_pipelines=False)) as c:
        r = c.get(path)
        assert r.status_code == status, r.text
        assert r.json()["error"]


def test_missing_init_and_media_come_from_a_peer_or_count_against_readiness(
        cluster: tuple[Node, Node, ManualClock]) -> None:
    _, b, _ = cluster
    rt = b.streams["live/demo"]
    rt.files.inits["video"].prune(2)  # B lost its inits (e.g. a fresh data directory)
    rt.files.dirs["audio"].prune(N0 + 7)
    with TestClient(create_app(b, run_pipelines=False)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "cannot serve 8 file(s)" in r.json()["streams"]["live/demo"]["reason"]
        assert c.get("/live/demo/video/init-0.mp4").status_code == 404  # no peer reachable
    missing, _ = asyncio.run(b.window_gaps(rt, fetch=False))
    assert missing == [f"{n}.audio" for n in range(N0, N0 + 7) if n != N0 + 4] + [
        "init-0.video", "init-1.video"]
