"""Which discovered streams a node packages: claims from sources, reconciled with the node.

A source (the nginx/SRS callbacks, a Wowza poller) *claims* ``app/name`` with an input URL
while the stream is published and *releases* it when it goes away. A claimed stream is
packaged exactly like a configured one (``Node.add_stream``); a stream nobody claims any
more stops reading (``Node.stop_stream``) and stays servable for ``linger`` seconds, then
is forgotten (``Node.remove_stream``). Configured streams are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sidecar.errors import BadRequest, SidecarError
from sidecar.settings import NAME_RE, StreamSpec, check_input_url

log = logging.getLogger(__name__)


class Refused(BadRequest):
    """A claim that names no valid stream or an application not discovered (HTTP 400)."""


class Unauthorized(SidecarError):
    """A callback without the shared secret or from an address not allowed (HTTP 403)."""


def check_name(kind: str, value: object) -> str:
    """A valid application or stream name, or ``Refused`` naming what is wrong."""
    if not isinstance(value, str) or not value:
        raise Refused(f"missing {kind} name")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Refused(f"{kind} name {value!r} has control characters")
    if "/" in value or "\\" in value or ".." in value or not NAME_RE.match(value):
        raise Refused(f"{kind} name {value!r} is not a valid name (letters, digits, '_', "
                      "'-', '.'; no '/' or '..'; at most 64)")
    return value


@dataclass(frozen=True, slots=True)
class Claim:
    """``source`` wants ``app/name`` packaged from ``input``."""

    source: str
    app: str
    name: str
    input: str

    @property
    def key(self) -> str:
        return f"{self.app}/{self.name}"


class Host(Protocol):
    """What discovery needs from a node (``sidecar.node.Node``)."""

    def stream_state(self, key: str) -> str: ...  # "running", "stopped" or "absent"
    def add_stream(self, spec: StreamSpec) -> object: ...
    async def stop_stream(self, key: str) -> None: ...
    def remove_stream(self, key: str) -> None: ...


class Discovery:
    """Claims by source, reconciled with the node one stream at a time."""

    def __init__(self, host: Host, *, apps: tuple[str, ...], configured: set[str],
                 linger: float, max_streams: int = 100,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.apps = apps
        self.configured = configured
        self.linger = linger
        self.max_streams = max_streams
        self.monotonic = monotonic
        self.claims: dict[str, dict[str, Claim]] = {}  # key -> source -> claim
        self.ours: dict[str, str] = {}  # discovered keys the node runs: key -> input
        self.stopped: dict[str, float] = {}  # key -> when it stopped (monotonic)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[str]] = set()

    def validate(self, source: str, app: object, name: object, input_url: str) -> Claim:
        """A claim for ``app/name``, or ``Refused`` (bad name, application not discovered)."""
        app_s, name_s = check_name("application", app), check_name("stream", name)
        if self.apps and app_s not in self.apps:
            raise Refused(f"application {app_s!r} is not discovered here "
                          f"(discovery applications: {', '.join(self.apps)})")
        try:
            url = check_input_url(input_url)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        return Claim(source, app_s, name_s, url)

    # -- claims ------------------------------------------------------------------------

    async def claim(self, claim: Claim) -> str:
        """Package ``claim``'s stream (now); what happened, in a word."""
        key = claim.key
        if key in self.configured:
            return "configured"
        self.claims.setdefault(key, {})[claim.source] = claim
        if key not in self.ours and len(self.ours) >= self.max_streams:
            self.claims[key].pop(claim.source, None)
            log.warning("discovery: %s not packaged: already %d discovered streams (the "
                        "limit)", key, self.max_streams)
            return "limit"
        return await self._reconcile(key)

    def release(self, source: str, key: str) -> str:
        """``source`` no longer has ``key``: stop it when no other source claims it."""
        claims = self.claims.get(key)
        if key in self.configured or not claims or claims.pop(source, None) is None:
            return "unknown"
        if not claims:
            del self.claims[key]
        self._spawn(key)
        return "stopping" if not claims else "running"

    def claimed(self, source: str) -> set[str]:
        return {k for k, by in self.claims.items() if source in by}

    # -- reconciling -------------------------------------------------------------------

    def _spawn(self, key: str) -> None:
        task = asyncio.get_running_loop().create_task(self._reconcile(key),
                                                      name=f"discovery-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until pending stops and starts are done (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _reconcile(self, key: str) -> str:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            claims = self.claims.get(key)
            state = self.host.stream_state(key)
            if claims:
                claim = next(reversed(claims.values()))  # the newest claim's input
                if state == "running" and self.ours.get(key) == claim.input:
                    return "running"
                if state == "running":
                    await self.host.stop_stream(key)
                try:
                    self.host.add_stream(StreamSpec(app=claim.app, name=claim.name,
                                                    input=claim.input))
                except SidecarError as exc:
                    log.error("discovery: cannot package %s from %s: %s", key, claim.input,
                              exc)
                    return "failed"
                self.ours[key] = claim.input
                self.stopped.pop(key, None)
                log.info("discovery: packaging %s <- %s (%s)", key, claim.input,
                         claim.source)
                return "started"
            if key in self.ours and state == "running":
                await self.host.stop_stream(key)
                self.stopped[key] = self.monotonic()
                del self.ours[key]
                log.info("discovery: %s stopped; its window stays servable for %.0f s",
                         key, self.linger)
            return "stopped"

    def expire(self) -> list[str]:
        """Forget stopped streams whose linger is over (their URLs 404 from then on)."""
        now = self.monotonic()
        gone = [k for k, at in self.stopped.items()
                if now - at >= self.linger and k not in self.claims]
        for key in gone:
            del self.stopped[key]
            if self.host.stream_state(key) == "stopped":
                self.host.remove_stream(key)
                log.info("discovery: %s expired", key)
        return gone

    def listing(self) -> dict[str, object]:
        """What ``GET /discovery`` shows."""
        now = self.monotonic()
        return {
            "streams": {k: {"input": url, "sources": sorted(self.claims[k])}
                        for k, url in sorted(self.ours.items()) if self.claims.get(k)},
            # Released, still reading until its input ends (at most a few seconds).
            "stopping": sorted(k for k in self.ours if not self.claims.get(k)),
            "stopped": {k: {"expires_in_s": round(max(0.0, self.linger - (now - at)), 1)}
                        for k, at in sorted(self.stopped.items())},
            "applications": list(self.apps),
        }

    async def run(self) -> None:
        """Expire lingering streams every second (forever; cancelled at shutdown)."""
        while True:
            self.expire()
            await asyncio.sleep(1.0)
