"""One contract, every backend: SQLite (embedded) and Redis (a real redis-server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.errors import ConfigError, StoreError
from sidecar.model import Epoch, Part, SegmentRecord, TrackDesc
from sidecar.store import TimelineStore, open_store
from sidecar.store.mirrored import MirroredStore
from sidecar.store.redis import RedisStore
from sidecar.store.sqlite import SqliteStore
from tests.e2e.harness import ProcessRegistry, RedisServer

Factory = Callable[[], TimelineStore]


@pytest.fixture(params=["sqlite", "redis"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens another connection to the same store each call (as another node would)."""
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "t.db")
        return
    registry = ProcessRegistry()
    server = RedisServer(tmp_path / "redis", registry=registry).start()
    try:
        yield lambda: RedisStore(server.url)
    finally:
        registry.stop_all()


def ep(index: int, node: str, anchor: int = 0) -> Epoch:
    return Epoch("live/x", index, anchor, 0, 0, 0, node, "avc1.64001F", "640x360")


def seg(n: int, node: str, sha: str = "h") -> SegmentRecord:
    return SegmentRecord("live/x", n, 0, n * 10, 10, (Part("ts", sha, 5), Part("video", sha, 3)),
                         n, node)


def test_epoch_compare_and_set_first_writer_wins(connect: Factory) -> None:
    a, b = connect(), connect()
    assert a.create_epoch(ep(0, "a", anchor=1)) == ep(0, "a", anchor=1)
    # b proposes the same index with another anchor: it gets a's record back.
    assert b.create_epoch(ep(0, "b", anchor=2)) == ep(0, "a", anchor=1)
    assert b.latest_epoch("live/x") == ep(0, "a", anchor=1)
    assert b.latest_epoch("other") is None
    assert [e.index for e in a.epochs("live/x")] == [0]


def test_concurrent_epoch_creation_agrees(connect: Factory) -> None:
    stores = [connect() for _ in range(4)]
    results: list[Epoch] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        got = stores[i].create_epoch(ep(0, f"n{i}", anchor=i))
        with lock:
            results.append(got)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and len(set(results)) == 1


def test_segments_first_writer_wins_and_queries(connect: Factory) -> None:
    s, other = connect(), connect()
    assert s.put_segment(seg(5, "a", "x")) == seg(5, "a", "x")
    assert other.put_segment(seg(5, "b", "y")) == seg(5, "a", "x")
    for n in (6, 7, 9):
        s.put_segment(seg(n, "a"))
    assert [r.number for r in s.recent("live/x", 2)] == [7, 9]
    assert [r.number for r in s.segments("live/x", 7)] == [7, 9]
    assert s.last_number("live/x") == 9
    assert s.last_number("nothing") is None
    assert s.epoch_first_numbers("live/x") == {0: 5}
    s.add_holder("live/x", 5, "b")
    s.add_holder("live/x", 5, "a")
    s.add_holder("live/x", 5, "a")
    assert s.holders("live/x", 5) == ["a", "b"]
    s.add_holder("live/x", 7, "a")
    assert other.newest_by_node("live/x") == {"a": 7, "b": 5}
    assert s.holders("live/x", 6) == []
    s.heartbeat("a", "http://a", 1)
    s.heartbeat("a", "http://a2", 2)
    assert [(n.node, n.url, n.heartbeat) for n in s.nodes()] == [("a", "http://a2", 2)]


def test_open_store_specs(tmp_path: Path) -> None:
    assert isinstance(open_store("redis://127.0.0.1:1/0", tmp_path), MirroredStore)
    assert isinstance(open_store(None, tmp_path), SqliteStore)
    assert (tmp_path / "timeline.sqlite3").exists()
    assert isinstance(open_store(f"sqlite://{tmp_path}/x.db", tmp_path), SqliteStore)
    with pytest.raises(ConfigError, match="unknown store"):
        open_store("ftp://x", tmp_path)


def test_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(tmp_path / "dir.db")


def test_redis_down_is_a_store_error_quickly(tmp_path: Path) -> None:
    import time

    from tests.e2e.harness import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="Redis"):
        store.latest_epoch("live/x")
    assert time.monotonic() - t0 < 2.0


def test_sqlite_forgets_records_beyond_keep(tmp_path: Path) -> None:
    from sidecar.store import sqlite

    s = SqliteStore(tmp_path / "t.db")
    s.put_segment(seg(1, "a"))
    s.add_holder("live/x", 1, "a")
    s.put_segment(seg(sqlite.KEEP + 100, "a"))
    assert [r.number for r in s.segments("live/x", 0)] == [sqlite.KEEP + 100]
    assert s.holders("live/x", 1) == []


def test_nodes_share_the_redis_clock(tmp_path: Path) -> None:
    """Two nodes whose host clocks disagree by 100 ms agree once both follow Redis TIME."""
    from sidecar.cli import build_node
    from sidecar.settings import load_settings

    registry = ProcessRegistry()
    server = RedisServer(tmp_path / "redis", registry=registry).start()
    try:
        clocks = []
        for name, skew in (("a", 0), ("b", 100)):
            settings = load_settings(node_id=name, data_dir=tmp_path / name, store=server.url,
                                     clock_offset_ms=skew, streams=["live/x=synthetic:"])
            node = build_node(settings)
            clocks.append(node.clock)
        a, b = clocks
        assert abs(a.now() - b.now()) < 20 * 90  # within 20 ms, though the hosts differ by 100
        reference = RedisStore(server.url).time()
        assert abs(a.now() - reference) < 50 * 90
    finally:
        registry.stop_all()


def test_epoch_track_descriptions_round_trip(connect: Factory) -> None:
    tracks = (
        TrackDesc("video", "avc1.64001F", 640, 360, "30000/1001",
                  init=Part("video", "a" * 64, 812)),
        TrackDesc("audio", "mp3", sample_rate=44_100, channels=2,
                  unsupported="mp3 audio cannot be packaged as CMAF"),
    )
    e = Epoch("live/x", 0, 5, 0, 0, 0, "a", "avc1.64001F,mp4a.40.34", "640x360", tracks)
    s = connect()
    assert s.create_epoch(e) == e
    assert connect().epochs("live/x") == [e]
    assert connect().latest_epoch("live/x") == e


def test_sqlite_schema_1_is_migrated_without_losing_records(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE epochs (stream TEXT NOT NULL, idx INTEGER NOT NULL, anchor INTEGER NOT NULL,
            t0 INTEGER NOT NULL, lead INTEGER NOT NULL, created_at INTEGER NOT NULL,
            node TEXT NOT NULL, codecs TEXT NOT NULL, resolution TEXT NOT NULL,
            PRIMARY KEY (stream, idx));
        CREATE TABLE segments (stream TEXT NOT NULL, number INTEGER NOT NULL,
            epoch INTEGER NOT NULL, start INTEGER NOT NULL, duration INTEGER NOT NULL,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, available_at INTEGER NOT NULL,
            node TEXT NOT NULL, PRIMARY KEY (stream, number));
        CREATE TABLE holders (stream TEXT NOT NULL, number INTEGER NOT NULL, node TEXT NOT NULL,
            PRIMARY KEY (stream, number, node));
        CREATE TABLE nodes (node TEXT PRIMARY KEY, url TEXT NOT NULL, heartbeat INTEGER NOT NULL);
        INSERT INTO epochs VALUES ('live/x', 0, 7, 0, 0, 0, 'a', 'avc1.64001F', '640x360');
        INSERT INTO segments VALUES ('live/x', 3, 0, 30, 10, 'abc', 99, 40, 'a');
    """)
    db.commit()
    db.close()
    s = SqliteStore(path)
    assert s.recent("live/x", 5) == [
        SegmentRecord("live/x", 3, 0, 30, 10, (Part("ts", "abc", 99),), 40, "a")]
    assert s.latest_epoch("live/x") == Epoch("live/x", 0, 7, 0, 0, 0, "a", "avc1.64001F",
                                             "640x360")
    s.put_segment(seg(4, "a"))
    s.close()
    assert [r.number for r in SqliteStore(path).recent("live/x", 5)] == [3, 4]


def test_redis_reads_records_written_by_0_1(tmp_path: Path) -> None:
    import json

    registry = ProcessRegistry()
    server = RedisServer(tmp_path / "redis", registry=registry).start()
    try:
        s = RedisStore(server.url)
        old = {"stream": "live/x", "number": 3, "epoch": 0, "start": 30, "duration": 10,
               "sha256": "abc", "size": 99, "available_at": 40, "node": "a"}
        s.r.hset("sidecar:v1:s:live/x:seg", "3", json.dumps(old))
        s.r.zadd("sidecar:v1:s:live/x:nums", {"3": 3})
        assert s.recent("live/x", 5) == [
            SegmentRecord("live/x", 3, 0, 30, 10, (Part("ts", "abc", 99),), 40, "a")]
    finally:
        registry.stop_all()
