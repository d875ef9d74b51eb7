"""HTTP edge for VOD: one FastAPI router; domain errors become HTTP status codes here.

``/vod/{file}/playlist.m3u8``, ``cmaf.m3u8``, ``manifest.mpd`` and what they list, plus
the Wowza aliases ``/vod/_definst_/mp4:{file}/playlist.m3u8`` (and ``manifest.mpd``).
GET and HEAD; ``ETag`` is a hash of the body (the same on every node), ``If-None-Match``
gives 304, a single ``Range`` gives 206. Errors answer JSON ``{"error": reason}``: 400
malformed or unsafe path, 404 unknown file or segment, 415 not media or an unsupported
codec, 422 a truncated or corrupt file, 503 when the file keeps changing while read.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sidecar.errors import BadRequest, NotFound, SidecarError
from sidecar.mux.ts import MuxError
from sidecar.vod.index import BrokenMedia, IndexStale, UnsupportedMedia
from sidecar.vod.service import Resource, VodService

log = logging.getLogger(__name__)

SEGMENT_CACHE = "public, max-age=86400"
MANIFEST_CACHE = "public, max-age=60"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BadRequest, 400), (NotFound, 404), (UnsupportedMedia, 415), (BrokenMedia, 422),
    (IndexStale, 503), (MuxError, 422))


def status_of(exc: Exception) -> int:
    """The HTTP status for a VOD error (500 for anything unexpected)."""
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


def vod_router(service: VodService, *, prefix: str = "/vod") -> APIRouter:
    """The router to ``include_router`` before the live catch-all routes."""
    router = APIRouter()

    @router.api_route(prefix + "/{rest:path}", methods=["GET", "HEAD"])
    async def vod(rest: str, request: Request) -> Response:
        try:
            resource = await service.aget(rest)
        except (SidecarError, OSError) as exc:
            status = 404 if isinstance(exc, OSError) else status_of(exc)
            if status >= 500:
                log.error("vod %s: %s", rest, exc)
            return JSONResponse({"error": str(exc)}, status_code=status)
        return respond(resource, request)

    return router


def respond(resource: Resource, request: Request) -> Response:
    """``resource`` with validators, conditional GET and single byte ranges."""
    headers = {"ETag": resource.etag, "Accept-Ranges": "bytes",
               "Cache-Control": SEGMENT_CACHE if resource.segment else MANIFEST_CACHE}
    if _matches(request.headers.get("if-none-match"), resource.etag):
        return Response(status_code=304, headers=headers)
    body = resource.body
    status = 200
    wanted = request.headers.get("range")
    m = _RANGE.match(wanted.strip()) if wanted and _if_range_ok(request, resource) else None
    if m is not None:  # one range; several or malformed ones are ignored (RFC 9110 14.2)
        span = _byte_range(m.group(1), m.group(2), len(body))
        if span is None:
            headers["Content-Range"] = f"bytes */{len(body)}"
            return Response(status_code=416, headers=headers)
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        body, status = body[first : last + 1], 206
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=status, headers=headers, media_type=resource.media_type)
    return Response(body, status_code=status, headers=headers, media_type=resource.media_type)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _if_range_ok(request: Request, resource: Resource) -> bool:
    value = request.headers.get("if-range")
    return value is None or value.strip() == resource.etag


def _byte_range(first_text: str, last_text: str, size: int) -> tuple[int, int] | None:
    """(first, last) of ``bytes=first-last``; None if unsatisfiable."""
    if not (first_text or last_text) or size == 0:
        return None
    if not first_text:  # suffix: the last N bytes
        n = int(last_text)
        return (max(size - n, 0), size - 1) if n else None
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or last < first:
        return None
    return first, last
