from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.model import Part, SegmentRecord
from sidecar.peers import STALE_AFTER, PeerFetcher
from sidecar.store.sqlite import SqliteStore
from tests.fakes.static_http import serve_bytes

GOOD = b"\x47" * 188 * 4
NOW = 10**12


async def fetch_once(fetcher: PeerFetcher, record: SegmentRecord) -> bytes | None:
    try:
        return await fetcher.fetch(record, NOW)
    finally:
        await fetcher.close()


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    started = {name: serve_bytes(body) for name, body in
               (("a-liar", b"\x47" * 188 * 4 + b"x"), ("good", GOOD), ("stale", GOOD))}
    yield {name: url for name, (_, url) in started.items()}
    for server, _ in started.values():
        server.shutdown()


def test_fetch_skips_wrong_bytes_and_stale_peers(tmp_path: Path,
                                                 servers: dict[str, str]) -> None:
    store = SqliteStore(tmp_path / "t.db")
    record = SegmentRecord("live/x", 7, 0, 0, 1,
                           (Part("ts", hashlib.sha256(GOOD).hexdigest(), len(GOOD)),), 0, "good")
    store.put_segment(record)
    for node in ("a-liar", "good", "stale", "me"):
        store.add_holder("live/x", 7, node)
    store.heartbeat("a-liar", servers["a-liar"], NOW)
    store.heartbeat("good", servers["good"], NOW)
    store.heartbeat("stale", servers["stale"], NOW - STALE_AFTER - 1)
    fetcher = PeerFetcher(store, "me")

    assert asyncio.run(fetch_once(fetcher, record)) == GOOD
    assert fetcher.rejected == 1 and fetcher.fetched == 1


def test_no_trustworthy_peer_means_none(tmp_path: Path, servers: dict[str, str]) -> None:
    store = SqliteStore(tmp_path / "t.db")
    record = SegmentRecord("live/x", 7, 0, 0, 1, (Part("ts", "0" * 64, 1),), 0, "a-liar")
    store.add_holder("live/x", 7, "a-liar")
    store.heartbeat("a-liar", servers["a-liar"], NOW)
    fetcher = PeerFetcher(store, "me")

    assert asyncio.run(fetch_once(fetcher, record)) is None
    assert fetcher.rejected == 1
