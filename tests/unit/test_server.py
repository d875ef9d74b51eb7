from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import httpx
import m3u8
import pytest
from fastapi.testclient import TestClient

from sidecar.clock import ManualClock
from sidecar.model import Part, SegmentRecord
from sidecar.node import Node, StreamRuntime
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.server import create_app
from sidecar.settings import StreamSpec, load_settings
from sidecar.storage import SegmentDir, StreamFiles
from sidecar.store.sqlite import SqliteStore

S = 90_000
D = 6 * S
N0 = 300_000_000


def make_node(root: Path, name: str, store: SqliteStore, clock: ManualClock) -> Node:
    settings = load_settings(node_id=name, data_dir=root / name, segment_wait=1.0,
                             streams=["live/demo=synthetic:"])
    files = StreamFiles(root / name / "segs", ("ts",))
    pipe = StreamPipeline(PipelineConfig("live/demo", name, D, outputs=("ts",)), None,  # type: ignore[arg-type]
                          store, files, clock)
    spec = StreamSpec.parse("live/demo=synthetic:")
    return Node(settings, store, clock, {"live/demo": StreamRuntime(spec, pipe)})


def ts_part(data: bytes) -> tuple[Part, ...]:
    return (Part("ts", hashlib.sha256(data).hexdigest(), len(data)),)


def publish(node: Node, n: int, data: bytes, at: int) -> None:
    rt = node.streams["live/demo"]
    rt.files.write("ts", n, data)
    node.store.put_segment(SegmentRecord("live/demo", n, 0, n * D, D, ts_part(data), at, "a"))
    rt.pipeline.status.last_publish = at


@pytest.fixture
def nodes(tmp_path: Path) -> tuple[Node, Node, ManualClock]:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock((N0 + 5) * D + 2 * S)
    a, b = make_node(tmp_path, "a", store, clock), make_node(tmp_path, "b", store, clock)
    for n in range(N0, N0 + 5):
        data = bytes([n % 256]) * 1880
        publish(a, n, data, (n + 1) * D)
        publish(b, n, data, (n + 1) * D)
    return a, b, clock


def test_playlists_and_segments_identical_across_nodes(
        nodes: tuple[Node, Node, ManualClock]) -> None:
    a, b, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as ca, \
            TestClient(create_app(b, run_pipelines=False)) as cb:
        for path in ("/live/demo/playlist.m3u8", "/live/demo/src/media.m3u8",
                     f"/live/demo/src/{N0 + 2}.ts"):
            ra, rb = ca.get(path), cb.get(path)
            assert ra.status_code == rb.status_code == 200
            assert ra.content == rb.content
            assert ra.headers["etag"] == rb.headers["etag"]
            assert ra.headers.get("last-modified") == rb.headers.get("last-modified")
            assert ra.headers["x-node"] == "a" and rb.headers["x-node"] == "b"
        media = ca.get("/live/demo/src/media.m3u8")
        assert media.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert "max-age=1" in media.headers["cache-control"]
        pl = m3u8.loads(media.text)
        assert pl.media_sequence == N0 and len(pl.segments) == 5
        seg = ca.get(f"/live/demo/src/{N0}.ts")
        assert seg.headers["content-type"] == "video/mp2t"
        assert "immutable" in seg.headers["cache-control"]
        assert seg.headers["etag"] == '"' + hashlib.sha256(seg.content).hexdigest()[:32] + '"'
        variant = m3u8.loads(ca.get("/live/demo/playlist.m3u8").text)
        assert variant.playlists[0].uri == "src/media.m3u8"


def test_range_conditional_and_cors(nodes: tuple[Node, Node, ManualClock]) -> None:
    a, _, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        url = f"/live/demo/src/{N0 + 1}.ts"
        full = c.get(url).content
        r = c.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == full[10:20]
        assert r.headers["content-range"] == f"bytes 10-19/{len(full)}"
        assert c.get(url, headers={"Range": "bytes=99999-"}).status_code == 416
        etag = c.get(url).headers["etag"]
        assert c.get(url, headers={"If-None-Match": etag}).status_code == 304
        r = c.get(url, headers={"Origin": "http://player.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert c.head(url).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/live/nope/playlist.m3u8", 404),
        ("/other/demo/src/media.m3u8", 404),
        ("/live/demo/hd/media.m3u8", 404),
        ("/live/demo/src/abc.ts", 400),
        ("/live/demo/src/1.mp3", 400),
        ("/live/demo/src/..%2F..%2Ftimeline.sqlite3", 404),
        ("/live/%2e%2e/src/media.m3u8", 400),
        ("/..%2F..%2Fetc/passwd", 400),
        ("/live/demo/src/%2e%2e%2f%2e%2e%2ftimeline.sqlite3", 404),
        ("/live/demo/src/123.ts", 404),  # far from the timeline: no wait
        ("/nothing/here", 404),
    ],
)
def test_bad_paths(nodes: tuple[Node, Node, ManualClock], path: str, status: int) -> None:
    a, _, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        r = c.get(path)
        assert r.status_code == status
        assert r.json()["error"]


def test_health_and_readiness(nodes: tuple[Node, Node, ManualClock]) -> None:
    a, _, clock = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        clock.advance(60 * S)  # nothing published for a minute
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "no segment published" in r.json()["streams"]["live/demo"]["reason"]


def test_listed_segment_not_yet_local_waits_then_serves(
        nodes: tuple[Node, Node, ManualClock]) -> None:
    a, b, _ = nodes
    n = N0 + 5
    data = b"\x47" * 188 * 3
    # A published n (it is in the shared timeline); B writes it a little later.
    publish(a, n, data, (n + 1) * D)

    async def scenario() -> tuple[int, bytes, int]:
        app = create_app(b, run_pipelines=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            async def late_write() -> None:
                await asyncio.sleep(0.3)
                b.streams["live/demo"].files.write("ts", n, data)
                cond = b.streams["live/demo"].pipeline.published
                async with cond:
                    cond.notify_all()

            task = asyncio.create_task(late_write())
            r = await client.get(f"/live/demo/src/{n}.ts")
            await task
            missing = await client.get(f"/live/demo/src/{n + 1}.ts")  # next one: waits, 404
            return r.status_code, r.content, missing.status_code

    status, body, missing = asyncio.run(scenario())
    assert status == 200 and body == data
    assert missing == 404
    assert threading.active_count() < 50


def test_gap_entries_serve_an_empty_segment(nodes: tuple[Node, Node, ManualClock]) -> None:
    a, _, clock = nodes
    publish(a, N0 + 7, b"\x47" * 188, (N0 + 6) * D)  # N0+5 and N0+6 become holes
    clock.t = (N0 + 6) * D + 2 * S
    with TestClient(create_app(a, run_pipelines=False)) as c:
        text = c.get("/live/demo/src/media.m3u8").text
        assert text.count("#EXT-X-GAP") == 2
        assert f"#EXT-X-GAP\n{N0 + 5}.ts\n" in text and f"#EXT-X-GAP\n{N0 + 6}.ts\n" in text
        r = c.get(f"/live/demo/src/{N0 + 5}.ts")
        assert r.status_code == 200 and len(r.content) == 188 and r.content[0] == 0x47
        assert c.get(f"/live/demo/src/{N0 + 9}.ts").status_code == 404


def test_cluster_status(nodes: tuple[Node, Node, ManualClock]) -> None:
    a, _, clock = nodes
    a.store.heartbeat("a", "http://127.0.0.1:1", clock.now() - 2 * S)
    a.store.heartbeat("b", "http://127.0.0.1:2", clock.now() - 60 * S)
    a.store.add_holder("live/demo", N0 + 3, "a")
    a.store.add_holder("live/demo", N0 + 4, "b")
    with TestClient(create_app(a, run_pipelines=False)) as c:
        body = c.get("/cluster").json()
    assert body["node"] == "a"
    assert [(n["node"], n["stale"]) for n in body["nodes"]] == [("a", False), ("b", True)]
    assert body["nodes"][0]["heartbeat_age_s"] == 2.0
    assert body["streams"]["live/demo"] == {"newest_segment": N0 + 4,
                                            "newest_by_node": {"a": N0 + 3, "b": N0 + 4}}


def test_not_ready_while_window_cannot_be_served(nodes: tuple[Node, Node, ManualClock]) -> None:
    a, b, clock = nodes
    n = N0 + 5
    data = b"\x47" * 376
    a.streams["live/demo"].files.write("ts", n, data)
    a.store.put_segment(SegmentRecord("live/demo", n, 0, n * D, D, ts_part(data),
                                      (n + 1) * D, "a"))
    clock.t = (n + 1) * D + 3 * S // 2  # listed half a second ago
    b.streams["live/demo"].pipeline.status.connected = True  # B's input is up
    with TestClient(create_app(b, run_pipelines=False)) as c:
        # Just listed: B's own pipeline may still deliver it; not held against B yet.
        assert c.get("/readyz").status_code == 200
        clock.advance(5 * S)
        r = c.get("/readyz")
        assert r.status_code == 503
        assert f"['{n}.ts']" in r.json()["streams"]["live/demo"]["reason"]
        b.streams["live/demo"].files.write("ts", n, data)  # e.g. fetched from a peer
        assert c.get("/readyz").status_code == 200


def test_segment_dir_writes_atomically_and_once(tmp_path: Path) -> None:
    d = SegmentDir(tmp_path / "s")
    first = d.write(5, b"abc")
    mtime = first.path.stat().st_mtime_ns
    assert d.write(5, b"abc") == first and first.path.stat().st_mtime_ns == mtime
    (tmp_path / "s" / ".6.ts.123.tmp").write_bytes(b"torn")  # a crash mid-write
    again = SegmentDir(tmp_path / "s")
    assert again.recover() == 1
    assert again.numbers() == [5] and not list((tmp_path / "s").glob(".*.tmp"))
    d.write(6, b"x")
    d.write(9, b"y")
    assert d.prune(7) == 2 and d.numbers() == [9]
    assert not (tmp_path / "s" / "5.ts").exists()
