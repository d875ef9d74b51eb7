"""Degraded mode: the cluster store goes away, publishing goes on, writes replay later."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import StoreError
from sidecar.model import Epoch, Part, SegmentRecord
from sidecar.store.mirrored import MirroredStore
from sidecar.store.sqlite import SqliteStore


class Flaky:
    """A cluster store that can be switched off; counts the calls that reached it."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        def call(*args: Any) -> Any:
            self.calls += 1
            if self.down:
                raise StoreError("connection refused")
            return target(*args)

        return call


class Tick:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def rec(n: int, node: str, sha: str = "h") -> SegmentRecord:
    return SegmentRecord("live/x", n, 0, n, 1, (Part("ts", sha, 1),), n, node)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[MirroredStore, Flaky, SqliteStore, Tick]:
    cluster = SqliteStore(tmp_path / "cluster.db")
    flaky = Flaky(cluster)
    tick = Tick()
    store = MirroredStore(flaky, SqliteStore(tmp_path / "mirror.db"), monotonic=tick)  # type: ignore[arg-type]
    return store, flaky, cluster, tick


def test_reads_mirror_and_survive_outage(setup: tuple[MirroredStore, Flaky, SqliteStore, Tick]
                                         ) -> None:
    store, flaky, cluster, _ = setup
    cluster.put_segment(rec(1, "other"))
    cluster.create_epoch(Epoch("live/x", 0, 5, 0, 0, 0, "other"))
    assert [r.number for r in store.recent("live/x", 10)] == [1]
    assert store.latest_epoch("live/x") is not None
    flaky.down = True
    # Still answered, from the mirror: the other node's record and epoch survive.
    assert [r.number for r in store.recent("live/x", 10)] == [1]
    assert store.latest_epoch("live/x") == Epoch("live/x", 0, 5, 0, 0, 0, "other")
    assert store.degraded


def test_writes_queue_and_replay_once_back(setup: tuple[MirroredStore, Flaky, SqliteStore, Tick],
                                           caplog: pytest.LogCaptureFixture) -> None:
    store, flaky, cluster, tick = setup
    caplog.set_level(logging.WARNING, logger="sidecar.store.mirrored")
    flaky.down = True
    for n in range(2, 7):
        assert store.put_segment(rec(n, "a")) == rec(n, "a")
        store.add_holder("live/x", n, "a")
        tick.t += 0.3
    assert cluster.recent("live/x", 10) == []
    assert store.status()["queued_writes"] == 10
    # Circuit breaker: one failing call per retry interval, not one per write.
    assert flaky.calls <= 3
    flaky.down = False
    tick.t += 1.0
    store.heartbeat("a", "http://a", 1)
    assert [r.number for r in cluster.recent("live/x", 10)] == [2, 3, 4, 5, 6]
    assert cluster.holders("live/x", 4) == ["a"]
    assert store.status() == {"degraded": False, "queued_writes": 0, "last_error":
                              "connection refused", "divergences": 0}
    # Logged once going down and once coming back, not per call.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable" in messages[0] and "reachable again" in messages[1]


def test_replay_reports_divergence(setup: tuple[MirroredStore, Flaky, SqliteStore, Tick]
                                   ) -> None:
    store, flaky, cluster, tick = setup
    flaky.down = True
    store.put_segment(rec(9, "a", sha="ours"))
    cluster.put_segment(rec(9, "b", sha="theirs"))  # b got there first meanwhile
    flaky.down = False
    tick.t += 2
    store.recent("live/x", 5)
    assert store.divergences == 1
    # The mirror now holds the cluster's record: playlists agree with the other nodes.
    assert store.local.recent("live/x", 5)[0].parts[0].sha256 == "theirs"


def test_a_store_that_restarted_empty_is_reseeded_before_it_is_read(
        setup: tuple[MirroredStore, Flaky, SqliteStore, Tick], tmp_path: Path) -> None:
    store, flaky, _, tick = setup
    epoch = Epoch("live/x", 0, 5, 0, 0, 0, "a")
    store.create_epoch(epoch)
    for n in range(1, 6):
        store.put_segment(rec(n, "a"))
        store.add_holder("live/x", n, "a")
    flaky.down = True
    for n in (6, 7):
        store.put_segment(rec(n, "a"))
    # Redis without persistence comes back with nothing in it.
    empty = SqliteStore(tmp_path / "restarted.db")
    flaky.inner = empty
    flaky.down = False
    tick.t += 2
    # The very first read after the outage already sees the whole window, not an empty one.
    assert [r.number for r in store.recent("live/x", 10)] == [1, 2, 3, 4, 5, 6, 7]
    assert store.latest_epoch("live/x") == epoch
    assert [r.number for r in empty.recent("live/x", 10)] == [1, 2, 3, 4, 5, 6, 7]
    assert empty.holders("live/x", 3) == ["a"]
    assert store.status()["divergences"] == 0 and not store.degraded

