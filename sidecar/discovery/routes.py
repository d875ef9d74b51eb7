"""HTTP edge of discovery: the publish callbacks and ``GET /discovery``.

Refusals map to HTTP here: a name that is not a valid stream name, or an application not
discovered, is 400; a caller without the secret or outside the allow-list is 403. nginx-rtmp
drops a publisher whose ``on_publish`` gets anything but 2xx, so only those deliberate
refusals answer 4xx: every other outcome (the stream is configured statically, the
discovered-stream limit is reached, its pipeline could not be built) answers 200 with
what happened, and publishing goes on.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sidecar.discovery.callbacks import Event, Gate, parse_nginx, parse_srs
from sidecar.discovery.manager import Discovery, Refused, Unauthorized

log = logging.getLogger(__name__)


def discovery_router(disc: Discovery, gate: Gate | None, input_template: str) -> APIRouter:
    """Routes for ``disc``; the callbacks only when ``gate`` is given."""
    router = APIRouter()

    @router.get("/discovery")
    async def listing() -> dict[str, object]:
        return disc.listing()

    if gate is None:
        return router

    async def handle(request: Request, source: str, event: Event | None,
                     error: Exception | None) -> tuple[int, dict[str, object]]:
        client = request.client.host if request.client else None
        try:
            gate.check(client, request.query_params, request.headers)
            if error is not None:
                raise error
            assert event is not None
            claim = disc.validate(source, event.app, event.name, input_template.format(
                app=event.app, name=event.name) if isinstance(event.app, str)
                and isinstance(event.name, str) else "")
            if event.start:
                outcome = await disc.claim(claim)
            else:
                outcome = disc.release(source, claim.key)
            return 200, {"stream": claim.key, "outcome": outcome}
        except Refused as exc:
            log.warning("discovery: %s callback from %s refused: %s", source, client, exc)
            return 400, {"error": str(exc)}
        except Unauthorized as exc:
            log.warning("discovery: %s callback refused: %s", source, exc)
            return 403, {"error": str(exc)}

    async def nginx(request: Request, call: str | None) -> Response:
        body = await request.body()
        try:
            event, error = parse_nginx(body, call), None
        except Refused as exc:
            event, error = None, exc
        status, answer = await handle(request, "nginx", event, error)
        return JSONResponse(answer, status_code=status)

    @router.post("/discovery/nginx")
    async def nginx_any(request: Request) -> Response:
        return await nginx(request, None)

    @router.post("/discovery/nginx/on_publish")
    async def nginx_publish(request: Request) -> Response:
        return await nginx(request, "publish")

    @router.post("/discovery/nginx/on_publish_done")
    async def nginx_done(request: Request) -> Response:
        return await nginx(request, "publish_done")

    @router.post("/discovery/srs")
    async def srs(request: Request) -> Response:
        try:
            event, error = parse_srs(await request.body()), None
        except Refused as exc:
            event, error = None, exc
        status, answer = await handle(request, "srs", event, error)
        if status == 200:  # SRS allows the publish on HTTP 200 with body 0
            return PlainTextResponse("0")
        return JSONResponse(answer, status_code=status)

    return router
