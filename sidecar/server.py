"""HTTP edge: FastAPI routes for playlists, segments and health. Domain errors map to
HTTP status codes here and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response

from sidecar import __version__
from sidecar.clock import Clock, SyncedClock
from sidecar.errors import BadRequest, NotFound, SidecarError, StoreError
from sidecar.grid import TICKS_PER_SECOND, seconds_to_ticks
from sidecar.hls import (
    MEDIA_PLAYLIST,
    RENDITION,
    Variant,
    render_media,
    render_multivariant,
)
from sidecar.model import SegmentRecord
from sidecar.peers import STALE_AFTER, PeerFetcher
from sidecar.pipeline import StreamPipeline
from sidecar.settings import NAME_RE, Settings, StreamSpec
from sidecar.storage import LocalSegment
from sidecar.store import TimelineStore
from sidecar.timeline import MediaPlaylist, build_media_playlist, visible

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPES = {"ts": "video/mp2t", "m4s": "video/iso.segment", "mp4": "video/mp4"}
_SEGMENT_RE = re.compile(r"^(\d{1,19})\.(ts)$")
_DEFAULT_BANDWIDTH = 2_000_000
# What a gap entry's URI serves: one MPEG-TS null packet. Players that honour EXT-X-GAP never
# ask for it; the others (FFmpeg's HLS demuxer) get a valid, empty segment instead of a 404.
GAP_SEGMENT = b"\x47\x1f\xff\x10" + b"\xff" * 184
_GAP_ETAG = '"' + hashlib.sha256(GAP_SEGMENT).hexdigest()[:32] + '"'


@dataclass
class StreamRuntime:
    spec: StreamSpec
    pipeline: StreamPipeline
    _cache: tuple[float, list[SegmentRecord], dict[int, int]] | None = field(default=None)
    missing: list[int] = field(default_factory=list)
    _firsts_at: float = 0.0

    @property
    def key(self) -> str:
        return self.spec.key


class Node:
    """Everything one sidecar process serves: its streams, store and clock."""

    def __init__(self, settings: Settings, store: TimelineStore, clock: Clock,
                 streams: dict[str, StreamRuntime]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.streams = streams
        self.started = time.monotonic()
        self.peers = PeerFetcher(store, settings.node_id)

    def stream(self, app: str, name: str) -> StreamRuntime:
        if not (NAME_RE.match(app) and NAME_RE.match(name)):
            raise BadRequest("malformed stream name")
        rt = self.streams.get(f"{app}/{name}")
        if rt is None:
            raise NotFound(f"unknown stream {app}/{name}")
        return rt

    async def records(self, rt: StreamRuntime) -> tuple[list[SegmentRecord], dict[int, int]]:
        """The newest records and epoch starts, cached for 100 ms per stream."""
        now = time.monotonic()
        if rt._cache is not None and now - rt._cache[0] < 0.1:
            return rt._cache[1], rt._cache[2]
        limit = self.settings.window + 16
        records = await asyncio.to_thread(self.store.recent, rt.key, limit)
        # Epoch starts change only when a new epoch appears: ask again then (or every 10 s).
        firsts = rt._cache[2] if rt._cache is not None else None
        if (firsts is None or now - rt._firsts_at > 10
                or any(r.epoch not in firsts for r in records)):
            firsts = await asyncio.to_thread(self.store.epoch_first_numbers, rt.key)
            rt._firsts_at = now
        rt._cache = (now, records, firsts)
        return records, firsts

    async def media_playlist(self, rt: StreamRuntime) -> MediaPlaylist | None:
        records, firsts = await self.records(rt)
        shown = visible(records, self.clock.now(), self.settings.publish_delay_ticks)
        return build_media_playlist(shown, firsts, window=self.settings.window,
                                    duration=self.settings.duration_ticks)

    async def variant(self, rt: StreamRuntime) -> Variant:
        pl = await self.media_playlist(rt)
        records, _ = await self.records(rt)
        by_number = {r.number: r for r in records}
        bandwidth = _DEFAULT_BANDWIDTH
        if pl is not None:
            rates = [by_number[e.number].size * 8 * TICKS_PER_SECOND // max(e.duration, 1)
                     for e in pl.entries if not e.gap and e.number in by_number]
            if rates:
                bandwidth = max(rates)
        epoch = await asyncio.to_thread(self.store.latest_epoch, rt.key)
        codecs = epoch.codecs if epoch else ""
        resolution = epoch.resolution if epoch else ""
        return Variant(f"{RENDITION}/{MEDIA_PLAYLIST}", bandwidth, codecs, resolution)

    async def is_gap(self, rt: StreamRuntime, number: int) -> bool:
        """``number`` is a hole between published segments (listed as ``EXT-X-GAP``)."""
        if rt.pipeline.segments.get(number) is not None:
            return False
        records, _ = await self.records(rt)
        numbers = {r.number for r in records}
        return (number not in numbers and bool(records) and records[0].number < number
                < records[-1].number)

    async def local_segment(self, rt: StreamRuntime, number: int, *,
                            from_peers: bool = True) -> LocalSegment:
        """The local file for ``number`` as the timeline lists it.

        Missing here but listed: fetch it from a peer that holds it (the bytes are checked
        against the timeline's hash, so they are the bytes we would have made); if no peer
        can give it, wait briefly for our own pipeline.
        """
        segments = rt.pipeline.segments
        records, _ = await self.records(rt)
        record = next((r for r in records if r.number == number), None)
        if record is None:
            found = await asyncio.to_thread(self.store.segments, rt.key, number)
            record = found[0] if found and found[0].number == number else None
        seg = segments.get(number)
        if seg is not None and (record is None or record.sha256 == seg.sha256):
            return seg
        newest = records[-1].number if records else None
        if record is None and (newest is None or number != newest + 1):
            raise NotFound(f"segment {number} of {rt.key} is not in the timeline")
        if record is not None and from_peers:
            data = await self.peers.fetch(record, self.clock.now())
            if data is not None:
                return await asyncio.to_thread(segments.write, number, data, record.sha256)
        if seg is None:
            seg = await self._wait_local(rt, number)
            if seg is not None and (record is None or record.sha256 == seg.sha256):
                return seg
        raise NotFound(f"segment {number} of {rt.key} is not available on this node")

    async def _wait_local(self, rt: StreamRuntime, number: int) -> LocalSegment | None:
        deadline = time.monotonic() + self.settings.segment_wait
        cond = rt.pipeline.published
        while (seg := rt.pipeline.segments.get(number)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), min(remaining, 0.5))
        return seg

    async def window_gaps(self, rt: StreamRuntime, *, fetch: bool) -> tuple[list[int], int | None]:
        """Listed segments of the current window this node cannot serve as listed.

        A segment that was listed only moments ago and that our own pipeline is still
        working on is not counted (nor fetched). With ``fetch``, the others are fetched
        from peers. Returns the missing numbers and when the newest record was published.
        """
        records, _ = await self.records(rt)
        pl = await self.media_playlist(rt)
        if pl is None:
            return [], None
        by_number = {r.number: r for r in records}
        now = self.clock.now()
        grace = seconds_to_ticks(self.settings.segment_wait) + self.settings.publish_delay_ticks
        pipe = rt.pipeline
        missing: list[int] = []
        for e in pl.entries:
            record = by_number.get(e.number)
            if e.gap or record is None:
                continue
            seg = pipe.segments.get(e.number)
            if seg is not None and seg.sha256 == record.sha256:
                continue
            own_last = pipe.status.last_number
            coming = pipe.status.connected and (own_last is None or own_last < e.number)
            if seg is None and coming and now - record.available_at < grace:
                continue
            if fetch:
                data = await self.peers.fetch(record, now)
                if data is not None:
                    await asyncio.to_thread(pipe.segments.write, e.number, data, record.sha256)
                    continue
            missing.append(e.number)
        return missing, records[-1].available_at if records else None

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        now = self.clock.now()
        stale = max(10 * self.settings.duration_ticks, 60 * TICKS_PER_SECOND)
        streams: dict[str, object] = {}
        ok = bool(self.streams)
        for key, rt in self.streams.items():
            st = rt.pipeline.status
            missing, newest_at = await self.window_gaps(rt, fetch=False)
            if newest_at is None:
                reason = "no segment published yet"
            elif now - newest_at > stale:
                reason = f"no segment published for {(now - newest_at) // TICKS_PER_SECOND} s"
            elif missing:
                reason = f"cannot serve {len(missing)} segment(s) of the window: {missing[:5]}"
            else:
                reason = ""
            streams[key] = {"ready": not reason, "reason": reason or None,
                            "connected": st.connected, "epoch": st.epoch,
                            "last_segment": st.last_number, "input_error": st.last_error}
            ok = ok and not reason
        body: dict[str, object] = {"ready": ok, "node": self.settings.node_id, "streams": streams}
        status = getattr(self.store, "status", None)
        if callable(status):
            body["store"] = status()
        return ok, body

    async def maintain(self, rt: StreamRuntime) -> None:
        """Keep the whole current window servable: backfill what we lack from peers."""
        while True:
            try:
                pl = await self.media_playlist(rt)
                if pl is not None:  # disk stays bounded even when only backfill writes
                    await asyncio.to_thread(rt.pipeline.segments.prune,
                                            pl.media_sequence - self.settings.retain_extra)
                missing, _ = await self.window_gaps(rt, fetch=True)
                if missing != rt.missing:
                    if missing:
                        log.warning("stream %s: cannot get segments %s from any peer",
                                    rt.key, missing[:5])
                    rt.missing = missing
            except StoreError as exc:
                log.debug("backfill skipped: %s", exc)
            await asyncio.sleep(1.0)

    async def cluster(self) -> dict[str, object]:
        now = self.clock.now()
        nodes = await asyncio.to_thread(self.store.nodes)
        streams: dict[str, object] = {}
        for key in self.streams:
            newest = await asyncio.to_thread(self.store.newest_by_node, key)
            last = await asyncio.to_thread(self.store.last_number, key)
            streams[key] = {"newest_segment": last, "newest_by_node": newest}
        body: dict[str, object] = {
            "node": self.settings.node_id,
            "nodes": [{"node": n.node, "url": n.url,
                       "heartbeat_age_s": round((now - n.heartbeat) / TICKS_PER_SECOND, 3),
                       "stale": now - n.heartbeat > STALE_AFTER} for n in nodes],
            "streams": streams,
        }
        status = getattr(self.store, "status", None)
        if callable(status):
            body["store"] = status()
        return body


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(node: Node, *, run_pipelines: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if run_pipelines:
            for rt in node.streams.values():
                tasks.append(asyncio.create_task(rt.pipeline.run(), name=f"pipeline-{rt.key}"))
                tasks.append(asyncio.create_task(node.maintain(rt), name=f"backfill-{rt.key}"))
            tasks.append(asyncio.create_task(_heartbeat(node), name="heartbeat"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            # Bounded: shutdown never hangs on a task, whatever it is doing.
            _, pending = await asyncio.wait(tasks, timeout=10) if tasks else (set(), set())
            for t in pending:
                log.error("task %s did not stop within 10 s", t.get_name())
            await node.peers.close()

    app = FastAPI(title="hls-sidecar", version=__version__, lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"],
                       allow_headers=["*"], expose_headers=["ETag", "Content-Range", "X-Node"])

    @app.middleware("http")
    async def node_header(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Node"] = node.settings.node_id
        return response

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "malformed request")

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error: %s", exc)
        return _error(503, "timeline store unavailable")

    @app.exception_handler(SidecarError)
    async def _other(request: Request, exc: SidecarError) -> JSONResponse:
        return _error(500, str(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "node": node.settings.node_id, "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, body = await node.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/cluster")
    async def cluster() -> dict[str, object]:
        return await node.cluster()

    @app.get("/streams")
    async def streams() -> dict[str, object]:
        return {key: {"input": rt.spec.input, "status": vars(rt.pipeline.status)}
                for key, rt in node.streams.items()}

    @app.api_route("/{app_name}/{name}/playlist.m3u8", methods=["GET", "HEAD"])
    async def multivariant(app_name: str, name: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        body = render_multivariant([await node.variant(rt)])
        return _playlist_response(body, request)

    @app.api_route("/{app_name}/{name}/{rendition}/media.m3u8", methods=["GET", "HEAD"])
    async def media(app_name: str, name: str, rendition: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        if rendition != RENDITION:
            raise NotFound(f"unknown rendition {rendition!r}")
        pl = await node.media_playlist(rt)
        if pl is None:
            raise NotFound(f"stream {rt.key} has no segments yet")
        return _playlist_response(render_media(pl), request)

    @app.api_route("/{app_name}/{name}/{rendition}/{segment}", methods=["GET", "HEAD"])
    async def segment(app_name: str, name: str, rendition: str, segment: str,
                      request: Request) -> Response:
        rt = node.stream(app_name, name)
        if rendition != RENDITION:
            raise NotFound(f"unknown rendition {rendition!r}")
        m = _SEGMENT_RE.match(segment)
        if not m:
            raise BadRequest("malformed segment name")
        number = int(m.group(1))
        if await node.is_gap(rt, number):
            return Response(GAP_SEGMENT, media_type=SEGMENT_TYPES["ts"],
                            headers={"Cache-Control": "public, max-age=10", "ETag": _GAP_ETAG})
        # A peer asking us never makes us ask another peer: no fetch chains.
        seg = await node.local_segment(rt, number,
                                       from_peers="x-sidecar-peer" not in request.headers)
        headers = {
            "ETag": seg.etag,
            "Cache-Control": "public, max-age=31536000, immutable",
            # Deterministic on every node (the file's mtime is not): the slot's start.
            "Last-Modified": formatdate(seg.number * node.settings.duration_ticks
                                        // TICKS_PER_SECOND, usegmt=True),
        }
        if request.headers.get("if-none-match") == seg.etag:
            return Response(status_code=304, headers=headers)
        return FileResponse(seg.path, media_type=SEGMENT_TYPES[m.group(2)], headers=headers)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"])
    async def fallback(path: str) -> Response:
        raise NotFound("no such resource")

    return app


def _playlist_response(body: str, request: Request) -> Response:
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=PLAYLIST_TYPE, headers=headers)


def sync_clock(node: Node) -> None:
    """Correct the node's clock to the cluster store's (when the store keeps time)."""
    clock, time_fn = node.clock, getattr(node.store, "time", None)
    if not isinstance(clock, SyncedClock) or time_fn is None:
        return
    sent = clock.base.now()
    reference = time_fn()
    received = clock.base.now()
    if reference is None:
        return
    first = not clock.synced
    change = clock.observe(reference, sent, received)
    if change is not None and (first or abs(change) > 4_500):
        log.info("clock: cluster time is %+d ms from this host's", clock.offset // 90)


async def _heartbeat(node: Node) -> None:
    while True:
        try:
            await asyncio.to_thread(sync_clock, node)
            await asyncio.to_thread(node.store.heartbeat, node.settings.node_id,
                                    node.settings.base_url, node.clock.now())
        except StoreError as exc:
            log.warning("heartbeat failed: %s", exc)
        await asyncio.sleep(2)
