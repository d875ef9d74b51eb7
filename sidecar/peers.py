"""Fetch a listed segment this node lacks from a peer that holds it, verified by hash."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx

from sidecar.grid import TICKS_PER_SECOND
from sidecar.hls import RENDITION, segment_uri
from sidecar.model import SegmentRecord
from sidecar.store import TimelineStore

log = logging.getLogger(__name__)

STALE_AFTER = 10 * TICKS_PER_SECOND


class PeerFetcher:
    def __init__(self, store: TimelineStore, node: str, *, timeout: float = 2.0) -> None:
        self.store = store
        self.node = node
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.fetched = 0
        self.rejected = 0

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def fetch(self, record: SegmentRecord, now: int) -> bytes | None:
        """Bytes of ``record`` from a live peer that holds it, or ``None``.

        A peer whose bytes do not hash to the timeline's SHA-256 is not trusted; the next
        holder is tried. Stale peers (no recent heartbeat) are skipped.
        """
        holders = await asyncio.to_thread(self.store.holders, record.stream, record.number)
        nodes = {n.node: n for n in await asyncio.to_thread(self.store.nodes)}
        for holder in holders:
            info = nodes.get(holder)
            if holder == self.node or info is None or now - info.heartbeat > STALE_AFTER:
                continue
            url = (f"{info.url.rstrip('/')}/{record.stream}/{RENDITION}/"
                   f"{segment_uri(record.number)}")
            try:
                r = await self._http().get(url, headers={"X-Sidecar-Peer": self.node})
            except httpx.HTTPError as exc:
                log.info("peer %s unreachable for %s: %s", holder, url, exc)
                continue
            if r.status_code != 200:
                continue
            if hashlib.sha256(r.content).hexdigest() != record.sha256:
                self.rejected += 1
                log.warning("peer %s sent wrong bytes for %s %d: not trusted", holder,
                            record.stream, record.number)
                continue
            self.fetched += 1
            return r.content
        return None
