"""A cluster store (Redis) with a local SQLite mirror: publishing never waits for the network.

While the cluster store answers, reads come from it and are mirrored locally; writes go to
both. When it fails, the node keeps publishing on the grid from the mirror (degraded mode),
queues its writes, and replays them in order when the store is back. State changes are
logged once, not per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sidecar.errors import StoreError
from sidecar.metrics import StoreMetrics
from sidecar.model import Epoch, SegmentRecord
from sidecar.store.base import NodeInfo, TimelineStore
from sidecar.store.sqlite import SqliteStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class MirroredStore:
    def __init__(self, remote: TimelineStore, local: SqliteStore, *,
                 retry_interval: float = 1.0, reseed_limit: int = 512,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.local = local
        self.retry_interval = retry_interval
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._queue: list[tuple[str, Any]] = []
        self._down_since: float | None = None
        self._next_try = 0.0
        self.last_error: str | None = None
        self.divergences = 0
        self._mirrored: dict[str, int] = {}
        # Streams this node has read or written: what to re-seed after an outage.
        self._streams: set[str] = set()
        self.reseed_limit = reseed_limit
        self.metrics = StoreMetrics()

    # -- state -----------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def status(self) -> dict[str, object]:
        return {"degraded": self.degraded, "queued_writes": len(self._queue),
                "last_error": self.last_error, "divergences": self.divergences}

    def _remote(self, fn: Callable[[], T]) -> T | None:
        """Call the cluster store, or return None (degraded) without waiting on it.

        Coming back, the store is first brought up to date (re-seeded and replayed) and only
        then read: a read answered by a store that restarted empty would otherwise drop the
        window from every playlist for a moment (players saw 404 on playlists).
        """
        with self._lock:
            if self._down_since is not None:
                if self._monotonic() < self._next_try:
                    return None
                try:
                    self._recover()
                except StoreError as exc:
                    self._fail(exc)
                    return None
        start = time.perf_counter()
        try:
            result = fn()
        except StoreError as exc:
            self.metrics.call(time.perf_counter() - start, ok=False)
            with self._lock:
                self._fail(exc)
            return None
        self.metrics.call(time.perf_counter() - start, ok=True)
        return result

    def _fail(self, exc: StoreError) -> None:
        if self._down_since is None:
            self._down_since = self._monotonic()
            log.warning("timeline store unreachable, publishing from the local mirror: %s", exc)
        self.last_error = str(exc)
        self._next_try = self._monotonic() + self.retry_interval

    def _recover(self) -> None:
        """Re-seed the store from the mirror, replay the queue; raises StoreError if it fails.

        Redis without persistence restarts empty: the epochs and the window every node listed
        before the outage would be gone from it. First-writer-wins makes re-seeding a no-op
        where the store kept its data, and the same on every node where it did not.
        """
        assert self._down_since is not None
        seeded = self._reseed()
        pending = len(self._queue)
        self._replay(seeded)
        down = self._monotonic() - self._down_since
        self._down_since = None
        log.warning("timeline store reachable again after %.1f s; replayed %d writes, "
                    "re-seeded %d records", down, pending, len(seeded))

    def _reseed(self) -> set[tuple[str, str, int]]:
        seeded: set[tuple[str, str, int]] = set()
        for stream in sorted(self._streams):
            records = self.local.recent(stream, self.reseed_limit)
            first_epoch = min((r.epoch for r in records), default=None)
            for epoch in self.local.epochs(stream):
                if first_epoch is None or epoch.index >= first_epoch:
                    self._seed_epoch(epoch)
                    seeded.add(("epoch", stream, epoch.index))
            for record in records:
                self._seed_segment(record)
                seeded.add(("segment", stream, record.number))
                for node in self.local.holders(stream, record.number):
                    self.remote.add_holder(stream, record.number, node)
        return seeded

    def _seed_epoch(self, item: Epoch) -> None:
        epoch = self.remote.create_epoch(item)
        if epoch != item:
            self.divergences += 1
            log.error("epoch %s/%d was decided differently while the store was down; "
                      "adopting the cluster's", item.stream, item.index)
        self.local.mirror_epoch(epoch)

    def _seed_segment(self, item: SegmentRecord) -> None:
        record = self.remote.put_segment(item)
        if record.parts != item.parts:
            self.divergences += 1
            log.error("segment %s/%d differs from the cluster's after the outage",
                      item.stream, item.number)
        self.local.mirror_segments([record])

    def _replay(self, seeded: set[tuple[str, str, int]]) -> None:
        """Send the queued writes in order; on failure keep the rest queued and raise."""
        queue, self._queue = self._queue, []
        for i, (kind, item) in enumerate(queue):
            try:
                if kind == "epoch" and ("epoch", item.stream, item.index) not in seeded:
                    self._seed_epoch(item)
                elif kind == "segment" and ("segment", item.stream, item.number) not in seeded:
                    self._seed_segment(item)
                elif kind == "holder":
                    self.remote.add_holder(*item)
            except StoreError:
                self._queue = queue[i:] + self._queue
                raise

    @staticmethod
    def _done(fn: Callable[..., None], *args: Any) -> bool:
        fn(*args)
        return True

    def _enqueue(self, kind: str, item: Any) -> None:
        with self._lock:
            self._queue.append((kind, item))

    def time(self) -> int | None:
        """The cluster store's clock, or ``None`` while it is unreachable."""
        time_fn = getattr(self.remote, "time", None)
        return None if time_fn is None else self._remote(time_fn)

    # -- epochs ----------------------------------------------------------------------

    def latest_epoch(self, stream: str) -> Epoch | None:
        self._streams.add(stream)
        remote = self._remote(lambda: self.remote.latest_epoch(stream))
        if remote is not None:
            self.local.mirror_epoch(remote)
            return remote
        return self.local.latest_epoch(stream)

    def create_epoch(self, epoch: Epoch) -> Epoch:
        self._streams.add(epoch.stream)
        stored = self._remote(lambda: self.remote.create_epoch(epoch))
        if stored is not None:
            self.local.mirror_epoch(stored)
            return stored
        self._enqueue("epoch", epoch)
        return self.local.create_epoch(epoch)

    def epochs(self, stream: str) -> list[Epoch]:
        remote = self._remote(lambda: self.remote.epochs(stream))
        return remote if remote is not None else self.local.epochs(stream)

    # -- segments --------------------------------------------------------------------

    def put_segment(self, record: SegmentRecord) -> SegmentRecord:
        self._streams.add(record.stream)
        stored = self._remote(lambda: self.remote.put_segment(record))
        if stored is not None:
            self.local.mirror_segments([stored])
            return stored
        self._enqueue("segment", record)
        return self.local.put_segment(record)

    def _mirror(self, stream: str, records: list[SegmentRecord]) -> None:
        newest = self._mirrored.get(stream, -1)
        fresh = [r for r in records if r.number > newest]
        if fresh:
            self.local.mirror_segments(fresh)
            self._mirrored[stream] = fresh[-1].number

    def recent(self, stream: str, limit: int) -> list[SegmentRecord]:
        self._streams.add(stream)
        remote = self._remote(lambda: self.remote.recent(stream, limit))
        if remote is not None:
            self._mirror(stream, remote)
            return remote
        return self.local.recent(stream, limit)

    def segments(self, stream: str, since: int) -> list[SegmentRecord]:
        remote = self._remote(lambda: self.remote.segments(stream, since))
        return remote if remote is not None else self.local.segments(stream, since)

    def last_number(self, stream: str) -> int | None:
        remote = self._remote(lambda: (self.remote.last_number(stream),))
        if remote is not None:
            return remote[0]
        return self.local.last_number(stream)

    def epoch_first_numbers(self, stream: str) -> dict[int, int]:
        remote = self._remote(lambda: self.remote.epoch_first_numbers(stream))
        return remote if remote is not None else self.local.epoch_first_numbers(stream)

    # -- holders and nodes -------------------------------------------------------------

    def add_holder(self, stream: str, number: int, node: str) -> None:
        self.local.add_holder(stream, number, node)
        if self._remote(lambda: self._done(self.remote.add_holder, stream, number, node)) is None:
            self._enqueue("holder", (stream, number, node))

    def holders(self, stream: str, number: int) -> list[str]:
        remote = self._remote(lambda: self.remote.holders(stream, number))
        return remote if remote is not None else self.local.holders(stream, number)

    def newest_by_node(self, stream: str) -> dict[str, int]:
        remote = self._remote(lambda: self.remote.newest_by_node(stream))
        return remote if remote is not None else self.local.newest_by_node(stream)

    def heartbeat(self, node: str, url: str, now: int) -> None:
        self.local.heartbeat(node, url, now)
        self._remote(lambda: self._done(self.remote.heartbeat, node, url, now))

    def nodes(self) -> list[NodeInfo]:
        remote = self._remote(self.remote.nodes)
        return remote if remote is not None else self.local.nodes()

    def close(self) -> None:
        self.remote.close()
        self.local.close()
