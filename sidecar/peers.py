"""Fetch a listed segment this node lacks from a peer that holds it, verified by hash."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx

from sidecar.grid import TICKS_PER_SECOND
from sidecar.metrics import PeerMetrics
from sidecar.model import Part, SegmentRecord
from sidecar.security.tokens import PEER_HEADER, peer_auth
from sidecar.storage import OUTPUTS, InitDir
from sidecar.store import TimelineStore

log = logging.getLogger(__name__)

STALE_AFTER = 10 * TICKS_PER_SECOND


class PeerFetcher:
    def __init__(self, store: TimelineStore, node: str, *, timeout: float = 2.0,
                 secret: str | None = None) -> None:
        self.store = store
        self.node = node
        self.secret = secret  # playback tokens on: prove to peers we hold the secret
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.fetched = 0
        self.rejected = 0
        self.metrics = PeerMetrics()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def fetch(self, record: SegmentRecord, now: int, part: str = "ts") -> bytes | None:
        """Bytes of ``record``'s ``part`` from a live peer that holds it, or ``None``.

        A peer whose bytes do not hash to the timeline's SHA-256 is not trusted; the next
        holder is tried. Stale peers (no recent heartbeat) are skipped.
        """
        want = record.part(part)
        if want is None:
            return None
        out = OUTPUTS[part]
        holders = await asyncio.to_thread(self.store.holders, record.stream, record.number)
        path = f"{record.stream}/{out.directory}/{record.number}.{out.ext}"
        return await self._get(holders, path, want, now, record.stream, "segment")

    async def fetch_init(self, stream: str, epoch: int, init: Part, now: int) -> bytes | None:
        """An epoch's CMAF init segment from any live peer (every node of the epoch has it)."""
        nodes = [n.node for n in await asyncio.to_thread(self.store.nodes)]
        path = f"{stream}/{OUTPUTS[init.name].directory}/{InitDir.name(epoch)}"
        return await self._get(nodes, path, init, now, stream, "init")

    async def _get(self, holders: list[str], path: str, want: Part, now: int, stream: str,
                   kind: str) -> bytes | None:
        nodes = {n.node: n for n in await asyncio.to_thread(self.store.nodes)}
        for holder in holders:
            info = nodes.get(holder)
            if holder == self.node or info is None or now - info.heartbeat > STALE_AFTER:
                continue
            url = f"{info.url.rstrip('/')}/{path}"
            try:
                headers = {"X-Sidecar-Peer": self.node}
                if self.secret is not None:
                    headers[PEER_HEADER] = peer_auth(self.secret, path,
                                                     now // TICKS_PER_SECOND)
                r = await self._http().get(url, headers=headers)
            except httpx.HTTPError as exc:
                log.info("peer %s unreachable for %s: %s", holder, url, exc)
                self.metrics.failed(stream, "unreachable")
                continue
            if r.status_code != 200:
                self.metrics.failed(stream, "status")
                continue
            if hashlib.sha256(r.content).hexdigest() != want.sha256:
                self.rejected += 1
                self.metrics.mismatch(stream)
                log.warning("peer %s sent wrong bytes for %s: not trusted", holder, path)
                continue
            self.fetched += 1
            self.metrics.fetched(stream, kind)
            return r.content
        return None
