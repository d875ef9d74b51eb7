"""HTTP edge: FastAPI routes for manifests, segments and health. Domain errors map to
HTTP status codes here and nowhere else; what is served comes from ``sidecar.node``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response

from sidecar import __version__
from sidecar.clock import SyncedClock
from sidecar.discovery.setup import discovery_for
from sidecar.errors import BadRequest, ConfigError, Forbidden, NotFound, SidecarError, StoreError
from sidecar.grid import TICKS_PER_SECOND, format_program_date_time
from sidecar.manifests.dash import render_mpd
from sidecar.manifests.hls import (
    MEDIA_PLAYLIST,
    RENDITION,
    AudioRendition,
    Variant,
    init_uri,
    render_media,
    render_multivariant,
)
from sidecar.metrics import CONTENT_TYPE as METRICS_TYPE
from sidecar.metrics import AppMetrics
from sidecar.node import CmafUnavailable, Node
from sidecar.security import tokens
from sidecar.settings import Settings
from sidecar.storage import LocalSegment
from sidecar.vod.routes import vod_router
from sidecar.vod.service import VodService

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPES = {"ts": "video/mp2t", "m4s": "video/iso.segment", "mp4": "video/mp4"}
MPD_TYPE = "application/dash+xml"
_TS_RE = re.compile(r"^(\d{1,19})\.ts$")
# CMAF files: `{N}.m4s` (HLS), `t{T}.m4s` (DASH $Time$: T = the segment's start in ticks),
# `init-{E}.mp4` (the epoch's init segment).
_CMAF_RE = re.compile(r"^(?:(\d{1,19})|t(\d{1,20}))\.m4s$|^init-(\d{1,10})\.mp4$")
# What a gap entry's URI serves. Players that honour EXT-X-GAP never ask for it; the others
# (FFmpeg's HLS demuxer) get a valid, empty segment instead of a 404: for TS one null packet,
# for CMAF a lone `styp` box.
GAP_SEGMENT = b"\x47\x1f\xff\x10" + b"\xff" * 184
GAP_CMAF = b"\x00\x00\x00\x18styp" + b"msdh\x00\x00\x00\x00" + b"msdhmsix"
_IMMUTABLE = "public, max-age=31536000, immutable"


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(node: Node, *, run_pipelines: bool = True) -> FastAPI:
    settings = node.settings
    # One VOD service per application name (``/vod/`` by default, ``NAME=DIR`` roots);
    # the index cache of the default one stays where it always was.
    vods = {name: VodService(roots, settings.data_dir / ("vod-index" if name == "vod"
                                                         else f"vod-index-{name}"),
                             settings.vod_duration_ticks)
            for name, roots in settings.vod_apps.items()}

    discovery = discovery_for(node)  # runtime streams: publish callbacks, Wowza REST

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if run_pipelines:
            for rt in node.streams.values():
                node.launch(rt)
            tasks.append(asyncio.create_task(_heartbeat(node), name="heartbeat"))
            for loop in discovery.loops if discovery else ():
                tasks.append(asyncio.create_task(loop(), name="discovery"))
        try:
            yield
        finally:
            tasks += node.stream_tasks()  # configured and discovered streams
            for t in tasks:
                t.cancel()
            # Bounded: shutdown never hangs on a task, whatever it is doing.
            _, pending = await asyncio.wait(tasks, timeout=10) if tasks else (set(), set())
            for t in pending:
                log.error("task %s did not stop within 10 s", t.get_name())
            await node.peers.close()
            for vod in vods.values():
                vod.close()

    app = FastAPI(title="hls-sidecar", version=__version__, lifespan=lifespan)
    policy = token_policy(settings)
    if policy is not None:  # added first: inside CORS and X-Node, so a 403 has both
        app.middleware("http")(_token_gate(policy, node, settings.token_ip_header))
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"],
                       allow_headers=["*"], expose_headers=["ETag", "Content-Range", "X-Node"])

    @app.middleware("http")
    async def node_header(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Node"] = node.settings.node_id
        return response

    metrics = AppMetrics(node, __version__)  # outside CORS and tokens: all counted
    app.middleware("http")(metrics.middleware)

    @app.exception_handler(CmafUnavailable)
    async def _no_cmaf(request: Request, exc: CmafUnavailable) -> JSONResponse:
        return _error(404, str(exc))

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

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(await metrics.exposition(), media_type=METRICS_TYPE,
                        headers={"Cache-Control": "no-store"})

    @app.get("/cluster")
    async def cluster() -> dict[str, object]:
        return await node.cluster()

    @app.get("/streams")
    async def streams() -> dict[str, object]:
        return {key: {"input": rt.spec.input, "outputs": list(rt.pipeline.cfg.outputs),
                      "status": vars(rt.pipeline.status),
                      # Several inputs: which one is read, and why (FailoverSource).
                      **({"inputs": status()} if callable(
                          status := getattr(rt.pipeline.source, "status", None)) else {})}
                for key, rt in node.streams.items()}

    @app.get("/time")
    async def utc_time() -> Response:
        # DASH UTCTiming (urn:mpeg:dash:utc:http-iso:2014): this node's clock, which with
        # Redis is the cluster's clock.
        return Response(format_program_date_time(node.clock.now()), media_type="text/plain",
                        headers={"Cache-Control": "no-store"})

    if discovery is not None:
        app.include_router(discovery.router)

    for name, vod in vods.items():
        # Before the live routes: /vod/{file}/playlist.m3u8 would match /{app}/{name}/...
        app.include_router(vod_router(vod, prefix=f"/{name}"))

    @app.api_route("/{app_name}/{name}/playlist.m3u8", methods=["GET", "HEAD"])
    async def multivariant(app_name: str, name: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        if "ts" not in rt.pipeline.cfg.outputs:
            raise NotFound(f"MPEG-TS output is turned off for {rt.key}")
        body = render_multivariant([await node.variant(rt)])
        return _text_response(body, PLAYLIST_TYPE, request)

    @app.api_route("/{app_name}/{name}/cmaf.m3u8", methods=["GET", "HEAD"])
    async def cmaf_multivariant(app_name: str, name: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        pl, epochs, listed = await node.cmaf_playlist(rt)
        epoch = epochs[max(e.epoch for e in pl.entries)]
        video, audio = epoch.track("video"), epoch.track("audio")
        renditions = []
        if audio is not None and audio.init is not None:
            renditions.append(AudioRendition(f"audio/{MEDIA_PLAYLIST}", channels=audio.channels))
        peak = avg = 0
        for t in (video, audio):
            if t is not None and t.init is not None:
                p, a = node.bandwidth(pl, listed, t.kind)
                peak, avg = peak + p, avg + a
        codecs = ",".join(t.codec for t in (video, audio) if t is not None and t.init)
        if video is not None and video.init is not None:
            variant = Variant(f"video/{MEDIA_PLAYLIST}", peak, codecs,
                              f"{video.width}x{video.height}", avg, video.frame_rate,
                              "audio" if renditions else "")
        else:  # audio only
            renditions = []
            variant = Variant(f"audio/{MEDIA_PLAYLIST}", peak, codecs, average_bandwidth=avg)
        body = render_multivariant([variant], renditions, version=7)
        return _text_response(body, PLAYLIST_TYPE, request)

    @app.api_route("/{app_name}/{name}/manifest.mpd", methods=["GET", "HEAD"])
    async def mpd(app_name: str, name: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        presentation = await node.presentation(rt)
        # Absolute, from the Host the player used: behind a balancer every node writes the
        # balancer's name, so the MPD stays identical across nodes.
        body = render_mpd(presentation, utc_timing_url=str(request.base_url) + "time")
        return _text_response(body, MPD_TYPE, request)

    @app.api_route("/{app_name}/{name}/{rendition}/media.m3u8", methods=["GET", "HEAD"])
    async def media(app_name: str, name: str, rendition: str, request: Request) -> Response:
        rt = node.stream(app_name, name)
        if rendition == RENDITION:
            if "ts" not in rt.pipeline.cfg.outputs:
                raise NotFound(f"MPEG-TS output is turned off for {rt.key}")
            pl = await node.media_playlist(rt)
            if pl is None:
                raise NotFound(f"stream {rt.key} has no segments yet")
            return _text_response(render_media(pl), PLAYLIST_TYPE, request)
        if rendition in ("video", "audio"):
            cmaf_pl, epochs, _ = await node.cmaf_playlist(rt)
            if not any(e.track(rendition) for e in epochs.values()):  # type: ignore[arg-type]
                raise NotFound(f"stream {rt.key} has no {rendition} track")
            return _text_response(render_media(cmaf_pl, "m4s", init_uri), PLAYLIST_TYPE,
                                  request)
        raise NotFound(f"unknown rendition {rendition!r}")

    @app.api_route("/{app_name}/{name}/{rendition}/{segment}", methods=["GET", "HEAD"])
    async def segment(app_name: str, name: str, rendition: str, segment: str,
                      request: Request) -> Response:
        rt = node.stream(app_name, name)
        # A peer asking us never makes us ask another peer: no fetch chains.
        from_peers = "x-sidecar-peer" not in request.headers
        if rendition == RENDITION:
            m = _TS_RE.match(segment)
            if not m:
                raise BadRequest("malformed segment name")
            number = int(m.group(1))
            if await node.is_gap(rt, "ts", number):
                return _gap(GAP_SEGMENT, "ts")
            seg = await node.local_segment(rt, number, "ts", from_peers=from_peers)
            return _file_response(seg, "ts", node, request)
        if rendition not in ("video", "audio"):
            raise NotFound(f"unknown rendition {rendition!r}")
        if "cmaf" not in rt.pipeline.cfg.outputs:
            raise CmafUnavailable(f"CMAF output is turned off for {rt.key}")
        m = _CMAF_RE.match(segment)
        if not m:
            raise BadRequest("malformed segment name")
        if m.group(3) is not None:
            init = await node.local_init(rt, rendition, int(m.group(3)), from_peers=from_peers)
            return _file_response(init, "mp4", node, request, last_modified=False)
        if m.group(2) is not None:  # DASH: the start time names the slot (N = floor(T / D))
            start = int(m.group(2))
            number = start // node.settings.duration_ticks
            record = await node.record(rt, number)
            if record is None or record.start != start:
                raise NotFound(f"no segment of {rt.key} starts at {start}")
        else:
            number = int(m.group(1))
            if await node.is_gap(rt, rendition, number):
                return _gap(GAP_CMAF, "m4s")
        seg = await node.local_segment(rt, number, rendition, from_peers=from_peers)
        return _file_response(seg, "m4s", node, request)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"])
    async def fallback(path: str) -> Response:
        raise NotFound("no such resource")

    return app


def token_policy(settings: Settings) -> tokens.Policy | None:
    """The playback token policy the settings ask for (None: no tokens)."""
    if settings.token_secret is None:
        return None
    secret = settings.token_secret.get_secret_value()
    try:
        if settings.token_scheme == "hmac":
            return tokens.HmacPolicy(secret, settings.token_include_ip)
        return tokens.WowzaPolicy(secret, settings.token_prefix, settings.token_hash,
                                  settings.token_include_ip, settings.token_instance)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _token_gate(policy: tokens.Policy, node: Node, ip_header: str | None
                ) -> Callable[[Request, Callable[[Request], Awaitable[Response]]],
                              Awaitable[Response]]:
    """Middleware: media paths need a valid token (403 otherwise); manifests carry it on."""

    async def gate(request: Request,
                   call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not tokens.is_protected(path):  # /healthz, /readyz, /time, ...
            return await call_next(request)
        now = node.clock.now() // TICKS_PER_SECOND
        peer = request.headers.get(tokens.PEER_HEADER)
        if peer is not None and tokens.check_peer_auth(policy.secret, path, peer, now):
            return await call_next(request)  # another node of the cluster: raw answers
        client = request.client.host if request.client else None
        if ip_header and (forwarded := request.headers.get(ip_header)):
            client = forwarded.rsplit(",", 1)[-1].strip()
        try:
            grant = tokens.check(policy, path, request.query_params.multi_items(), client,
                                 now)
        except Forbidden as exc:
            return _error(403, str(exc))
        response = await call_next(request)
        media_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not grant.carried or not (
                "mpegurl" in media_type or "dash+xml" in media_type):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        if request.method == "HEAD":  # the length with the token is not known here: none
            head = Response(status_code=200, headers=headers)
            del head.headers["content-length"]
            return head
        # The ETag stays: the token is in the URL, so one URL still means one body.
        text = tokens.carry(body.decode(), media_type, grant.carried)
        return Response(text, status_code=200, headers=headers)

    return gate


def _gap(data: bytes, ext: str) -> Response:
    return Response(data, media_type=SEGMENT_TYPES[ext],
                    headers={"Cache-Control": "public, max-age=10", "ETag": _etag(data)})


def _file_response(seg: LocalSegment, ext: str, node: Node, request: Request, *,
                   last_modified: bool = True) -> Response:
    headers = {"ETag": seg.etag, "Cache-Control": _IMMUTABLE}
    if last_modified:
        # Deterministic on every node (the file's mtime is not): the slot's start.
        headers["Last-Modified"] = formatdate(
            seg.number * node.settings.duration_ticks // TICKS_PER_SECOND, usegmt=True)
    if request.headers.get("if-none-match") == seg.etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(seg.path, media_type=SEGMENT_TYPES[ext], headers=headers)


def _text_response(body: str, media_type: str, request: Request) -> Response:
    etag = _etag(body.encode())
    headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


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
