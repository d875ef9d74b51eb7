"""Wowza Streaming Engine REST API poller (port 8087).

Per application it asks ``GET /v2/servers/_defaultServer_/vhosts/_defaultVHost_/
applications/{app}/instances/_definst_`` (``Accept: application/json``; the
``InstanceConfig`` of WSE's published OpenAPI description) and claims every entry of
``incomingStreams`` with ``isConnected: true`` as ``{app}/{name}``, releasing it when it is
gone or disconnected. WSE's REST interface authenticates with ``none``, ``basic`` or
``digest`` (Server.xml ``<AuthenticationMethod>``): the scheme is taken from the server's
``WWW-Authenticate`` challenge. A server that is down, refuses the credentials or answers
garbage is logged once per state change and changes no claim: running streams keep running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

from sidecar.discovery.manager import Discovery, Refused

log = logging.getLogger(__name__)

INSTANCE_PATH = ("/v2/servers/_defaultServer_/vhosts/_defaultVHost_/applications/{app}"
                 "/instances/_definst_")
ACCEPT = "application/json; charset=utf-8"


def choose_auth(challenges: list[str], user: str | None, password: str | None
                ) -> httpx.Auth | None:
    """The auth a ``WWW-Authenticate`` challenge asks for (digest over basic), or None."""
    schemes = {c.strip().split(" ", 1)[0].lower() for c in challenges if c.strip()}
    if user is None:
        return None
    if "digest" in schemes:
        return httpx.DigestAuth(user, password or "")
    if "basic" in schemes:
        return httpx.BasicAuth(user, password or "")
    return None


def parse_instance(data: object) -> dict[str, bool]:
    """``incomingStreams`` of an ``InstanceConfig`` -> {name: isConnected}; ValueError."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    streams = data.get("incomingStreams")
    if not isinstance(streams, list):
        raise ValueError("no incomingStreams list")
    out: dict[str, bool] = {}
    for entry in streams[:10_000]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError("an incomingStreams entry without a name")
        out[entry["name"]] = entry.get("isConnected") is True
    return out


def default_input(base_url: str) -> str:
    """``rtmp://{WSE host}:1935/{app}/{name}``: pull from the server the REST API is on."""
    host = urlsplit(base_url).hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"rtmp://{host}:1935/{{app}}/{{name}}"


@dataclass
class WowzaPoller:
    """Polls one WSE server's applications and claims their connected streams."""

    discovery: Discovery
    base_url: str
    apps: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    input_template: str = ""
    interval: float = 5.0
    timeout: float = 5.0
    transport: httpx.AsyncBaseTransport | None = None
    state: dict[str, str] = field(default_factory=dict)  # app -> "ok" or what is wrong
    server_state: str | None = None
    _auth: httpx.Auth | None = None
    _auth_scheme: str = "none"
    _skipped: set[str] = field(default_factory=set)
    log_line: Callable[[str], None] = field(default=log.warning)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.input_template = self.input_template or default_input(self.base_url)
        self.source = f"wowza:{self.base_url}"

    def _set_state(self, app: str, state: str) -> None:
        if self.state.get(app) != state:
            self.state[app] = state
            if state == "ok":
                log.info("Wowza REST %s: application %s answers (%s auth)", self.base_url,
                         app, self._auth_scheme)
            else:
                self.log_line(f"Wowza REST {self.base_url}: application {app}: {state}; "
                              "streams already discovered keep running")

    def _set_server(self, state: str) -> None:
        if self.server_state != state:
            if state != "ok":
                self.log_line(f"Wowza REST {self.base_url}: {state}; streams already "
                              "discovered keep running")
            elif self.server_state is not None:
                log.info("Wowza REST %s: reachable again", self.base_url)
            self.server_state = state
            if state != "ok":
                self.state.clear()  # each application says how it is once it answers

    async def _get(self, client: httpx.AsyncClient, url: str) -> httpx.Response:
        r = await client.get(url, auth=self._auth or httpx.USE_CLIENT_DEFAULT)
        if r.status_code != 401:
            return r
        challenges = r.headers.get_list("www-authenticate")
        if self._auth is not None:  # these credentials were tried: they are wrong
            return r
        auth = choose_auth(challenges, self.user, self.password)
        if auth is None:
            return r
        self._auth = auth
        self._auth_scheme = "digest" if isinstance(auth, httpx.DigestAuth) else "basic"
        return await client.get(url, auth=auth)

    async def poll_once(self) -> dict[str, set[str]]:
        """One round over every application; the connected streams of those that answered."""
        found: dict[str, set[str]] = {}
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport,
                                     headers={"Accept": ACCEPT}) as client:
            for app in self.apps:
                url = self.base_url + INSTANCE_PATH.format(app=quote(app, safe=""))
                try:
                    r = await self._get(client, url)
                except httpx.HTTPError as exc:  # the server, not this application: one line
                    self._set_server(f"unreachable ({type(exc).__name__}: {exc})")
                    break
                self._set_server("ok")
                if r.status_code == 401:
                    self._set_state(app, self._auth_problem(r))
                    continue
                if r.status_code != 200:
                    self._set_state(app, f"HTTP {r.status_code}")
                    continue
                try:
                    streams = parse_instance(r.json())
                except ValueError as exc:
                    self._set_state(app, f"answers garbage ({exc})")
                    continue
                self._set_state(app, "ok")
                found[app] = {n for n, connected in streams.items() if connected}
                await self._apply(app, found[app])
        return found

    def _auth_problem(self, r: httpx.Response) -> str:
        asked = ", ".join(c.split(" ", 1)[0] for c in r.headers.get_list("www-authenticate"))
        if self.user is None:
            return f"needs credentials (HTTP 401, server asks for {asked or 'auth'})"
        if self._auth is None:
            return f"HTTP 401 with no basic or digest challenge ({asked or 'none'})"
        self._auth = None  # ask the challenge again next time (the server may change)
        return (f"credentials for user {self.user!r} refused (HTTP 401, "
                f"{self._auth_scheme} auth)")

    async def _apply(self, app: str, connected: set[str]) -> None:
        prefix = f"{app}/"
        for name in sorted(connected):
            try:
                claim = self.discovery.validate(
                    self.source, app, name, self.input_template.format(app=app, name=name))
            except Refused as exc:
                if f"{app}/{name}" not in self._skipped:
                    self._skipped.add(f"{app}/{name}")
                    self.log_line(f"Wowza REST {self.base_url}: stream skipped: {exc}")
                continue
            if claim.key not in self.discovery.claimed(self.source):
                await self.discovery.claim(claim)
        for key in sorted(self.discovery.claimed(self.source)):
            if key.startswith(prefix) and key[len(prefix):] not in connected:
                self.discovery.release(self.source, key)

    async def run(self) -> None:
        """Poll every ``interval`` seconds (forever; cancelled at shutdown)."""
        while True:
            try:
                async with asyncio.timeout(self.timeout * (len(self.apps) + 1) * 2):
                    await self.poll_once()
            except TimeoutError:
                self._set_server("a poll took too long")
            await asyncio.sleep(self.interval)
