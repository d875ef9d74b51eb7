"""Discovery: names, callbacks, the gate, auth selection, claims and the Wowza poller."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sidecar.discovery.callbacks import Gate, parse_nginx, parse_srs
from sidecar.discovery.manager import Discovery, Refused, Unauthorized, check_name
from sidecar.discovery.routes import discovery_router
from sidecar.discovery.wowza import WowzaPoller, choose_auth, default_input, parse_instance
from sidecar.settings import StreamSpec
from tests.fakes.wowza_rest import FakeWowzaRest


class FakeHost:
    """A node's runtime-stream API, recording what discovery asked for."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []

    def stream_state(self, key: str) -> str:
        return self.state.get(key, "absent")

    def add_stream(self, spec: StreamSpec) -> object:
        self.state[spec.key] = "running"
        self.inputs[spec.key] = spec.input
        self.calls.append(("add", spec.key))
        return spec

    async def stop_stream(self, key: str) -> None:
        self.state[key] = "stopped"
        self.calls.append(("stop", key))

    def remove_stream(self, key: str) -> None:
        del self.state[key]
        self.calls.append(("remove", key))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(configured: set[str] | None = None, max_streams: int = 100
         ) -> tuple[Discovery, FakeHost, Clock]:
    host, clock = FakeHost(), Clock()
    disc = Discovery(host, apps=("live",), configured=configured or set(), linger=20.0,
                     max_streams=max_streams, monotonic=clock)
    return disc, host, clock


URL = "rtmp://127.0.0.1:1935/{app}/{name}"


# -- names and bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cam1", "a.b-c_d", "X" * 64])
def test_valid_names(name: str) -> None:
    assert check_name("stream", name) == name


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", "../x", "a\x00b", "a\nb", "a\x7f",
                                  "-x", "X" * 65, "a b", "a\\b", None, 3])
def test_invalid_names_are_refused(name: object) -> None:
    with pytest.raises(Refused):
        check_name("stream", name)


def test_nginx_body_first_value_wins() -> None:
    # nginx writes its fields first, then the publisher's query string (?name=evil).
    body = (b"app=live&flashver=FMLE&tcurl=rtmp://x/live&addr=10.0.0.9&clientid=7"
            b"&call=publish&name=cam1&type=live&name=evil&app=other")
    ev = parse_nginx(body)
    assert (ev.start, ev.app, ev.name, ev.addr) == (True, "live", "cam1", "10.0.0.9")
    assert parse_nginx(b"app=live&name=cam1&call=publish_done").start is False
    assert parse_nginx(b"app=live&name=cam1", "publish_done").start is False
    with pytest.raises(Refused):
        parse_nginx(b"app=live&name=cam1&call=play")
    with pytest.raises(Refused):
        parse_nginx(b"\xff\xfe")


def test_srs_body() -> None:
    ev = parse_srs(b'{"action":"on_publish","client_id":"x","ip":"10.1.1.1","vhost":'
                   b'"__defaultVhost__","app":"live","stream":"cam2","param":"","tcUrl":"t"}')
    assert (ev.start, ev.app, ev.name) == (True, "live", "cam2")
    assert parse_srs(b'{"action":"on_unpublish","app":"live","stream":"cam2"}').start is False
    for bad in (b"[1]", b"{", b'{"action":"on_play","app":"live","stream":"x"}'):
        with pytest.raises(Refused):
            parse_srs(bad)


def test_gate() -> None:
    gate = Gate("s3cret", ["127.0.0.1/8", "10.0.0.0/24"])
    gate.check("127.0.0.1", {"secret": "s3cret"}, {})
    gate.check("10.0.0.5", {}, {"x-sidecar-secret": "s3cret"})
    with pytest.raises(Unauthorized, match="allow-list"):
        gate.check("10.0.1.5", {"secret": "s3cret"}, {})
    with pytest.raises(Unauthorized, match="secret"):
        gate.check("127.0.0.1", {"secret": "wrong"}, {})
    with pytest.raises(Unauthorized, match="secret"):
        gate.check("127.0.0.1", {}, {})
    with pytest.raises(Unauthorized):
        gate.check(None, {"secret": "s3cret"}, {})
    Gate(None, []).check("203.0.113.1", {}, {})  # neither: open (not the default)


def test_auth_follows_the_challenge() -> None:
    assert isinstance(choose_auth(['Digest realm="w", nonce="n", qop="auth"'], "u", "p"),
                      httpx.DigestAuth)
    assert isinstance(choose_auth(['Basic realm="w"'], "u", "p"), httpx.BasicAuth)
    assert isinstance(choose_auth(['Basic realm="w"', 'Digest realm="w", nonce="n"'], "u",
                                  "p"), httpx.DigestAuth)
    assert choose_auth(['Basic realm="w"'], None, None) is None
    assert choose_auth(['Bearer realm="w"'], "u", "p") is None


def test_instance_parsing() -> None:
    assert parse_instance({"incomingStreams": [{"name": "a", "isConnected": True},
                                               {"name": "b", "isConnected": False},
                                               {"name": "c"}]}) == {"a": True, "b": False,
                                                                    "c": False}
    for bad in ([], {"incomingStreams": "x"}, {"incomingStreams": [{"isConnected": True}]},
                {"name": "_definst_"}):
        with pytest.raises(ValueError):
            parse_instance(bad)
    assert default_input("http://wse.example:8087") == "rtmp://wse.example:1935/{app}/{name}"


# -- claims and their state changes ---------------------------------------------------------

def test_claim_release_linger_expire() -> None:
    async def go() -> None:
        disc, host, clock = make()
        claim = disc.validate("nginx", "live", "cam1", URL.format(app="live", name="cam1"))
        assert await disc.claim(claim) == "started"
        assert host.state == {"live/cam1": "running"}
        assert await disc.claim(claim) == "running"  # a second publish: nothing new
        assert host.calls == [("add", "live/cam1")]
        assert disc.release("nginx", "live/cam1") == "stopping"
        assert disc.listing()["streams"] == {} and disc.listing()["stopping"] == ["live/cam1"]
        await disc.settle()
        assert disc.listing()["stopping"] == []
        assert host.state["live/cam1"] == "stopped"
        assert disc.listing()["stopped"] == {"live/cam1": {"expires_in_s": 20.0}}
        clock.t += 19.9
        assert disc.expire() == []
        clock.t += 0.1
        assert disc.expire() == ["live/cam1"]
        assert host.state == {}
        assert host.calls == [("add", "live/cam1"), ("stop", "live/cam1"),
                              ("remove", "live/cam1")]
        assert disc.release("nginx", "live/cam1") == "unknown"

    asyncio.run(go())


def test_republish_while_lingering_restarts() -> None:
    async def go() -> None:
        disc, host, clock = make()
        claim = disc.validate("nginx", "live", "cam1", "rtmp://127.0.0.1/live/cam1")
        await disc.claim(claim)
        disc.release("nginx", "live/cam1")
        await disc.settle()
        clock.t += 5
        assert await disc.claim(claim) == "started"
        assert host.state == {"live/cam1": "running"}
        clock.t += 100
        assert disc.expire() == []  # running again: never expired
        assert host.state == {"live/cam1": "running"}

    asyncio.run(go())


def test_two_sources_one_stream() -> None:
    async def go() -> None:
        disc, host, _ = make()
        url = "rtmp://127.0.0.1/live/cam1"
        await disc.claim(disc.validate("nginx", "live", "cam1", url))
        await disc.claim(disc.validate("srs", "live", "cam1", url))
        assert disc.release("nginx", "live/cam1") == "running"
        await disc.settle()
        assert host.state["live/cam1"] == "running"
        disc.release("srs", "live/cam1")
        await disc.settle()
        assert host.state["live/cam1"] == "stopped"

    asyncio.run(go())


def test_configured_streams_and_the_limit() -> None:
    async def go() -> None:
        disc, host, _ = make(configured={"live/static"}, max_streams=1)
        url = "rtmp://127.0.0.1/live/x"
        assert await disc.claim(disc.validate("nginx", "live", "static", url)) == "configured"
        assert disc.release("nginx", "live/static") == "unknown"
        assert await disc.claim(disc.validate("nginx", "live", "a", url)) == "started"
        assert await disc.claim(disc.validate("nginx", "live", "b", url)) == "limit"
        assert host.calls == [("add", "live/a")]
        with pytest.raises(Refused, match="not discovered"):
            disc.validate("nginx", "other", "a", url)

    asyncio.run(go())


# -- the HTTP edge ------------------------------------------------------------------------

@pytest.fixture
def edge() -> Iterator[tuple[TestClient, FakeHost]]:
    disc, host, _ = make()
    app = FastAPI()
    app.include_router(discovery_router(disc, Gate("k", ["127.0.0.1/8"]), URL))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        yield client, host


def _form(**fields: str) -> dict[str, object]:
    return {"content": "&".join(f"{k}={v}" for k, v in fields.items()),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


def test_nginx_callbacks(edge: tuple[TestClient, FakeHost]) -> None:
    client, host = edge
    r = client.post("/discovery/nginx/on_publish?secret=k",
                    **_form(app="live", name="cam1", addr="10.0.0.9", call="publish"))
    assert r.status_code == 200 and r.json() == {"stream": "live/cam1", "outcome": "started"}
    assert host.inputs["live/cam1"] == "rtmp://127.0.0.1:1935/live/cam1"
    assert client.get("/discovery").json()["streams"]["live/cam1"]["sources"] == ["nginx"]
    r = client.post("/discovery/nginx?secret=k", **_form(app="live", name="cam1",
                                                         call="publish_done"))
    assert r.status_code == 200 and r.json()["outcome"] == "stopping"


@pytest.mark.parametrize(("path", "fields", "status"), [
    ("/discovery/nginx/on_publish?secret=k", {"app": "live", "name": "..", "call": "publish"},
     400),
    ("/discovery/nginx/on_publish?secret=k", {"app": "live", "name": "a%2Fb"}, 400),
    ("/discovery/nginx/on_publish?secret=k", {"app": "live", "name": "a%01b"}, 400),
    ("/discovery/nginx/on_publish?secret=k", {"app": "other", "name": "cam1"}, 400),
    ("/discovery/nginx/on_publish?secret=k", {"app": "live"}, 400),
    ("/discovery/nginx/on_publish?secret=bad", {"app": "live", "name": "cam1"}, 403),
    ("/discovery/nginx/on_publish", {"app": "live", "name": "cam1", "secret": "k"}, 403),
])
def test_refused_callbacks_start_nothing(edge: tuple[TestClient, FakeHost], path: str,
                                         fields: dict[str, str], status: int) -> None:
    client, host = edge
    r = client.post(path, **_form(**fields))
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert host.calls == []


def test_callers_outside_the_allow_list_are_refused() -> None:
    disc, host, _ = make()
    app = FastAPI()
    app.include_router(discovery_router(disc, Gate(None, ["127.0.0.1/8"]), URL))
    with TestClient(app, client=("10.9.9.9", 40000)) as client:
        r = client.post("/discovery/nginx/on_publish", **_form(app="live", name="cam1"))
    assert r.status_code == 403 and "allow-list" in r.json()["error"]
    assert host.calls == []


def test_srs_callbacks(edge: tuple[TestClient, FakeHost]) -> None:
    client, host = edge
    r = client.post("/discovery/srs", headers={"X-Sidecar-Secret": "k"},
                    json={"action": "on_publish", "app": "live", "stream": "cam9",
                          "ip": "10.0.0.1", "vhost": "__defaultVhost__"})
    assert r.status_code == 200 and r.text == "0"
    assert host.state == {"live/cam9": "running"}
    r = client.post("/discovery/srs", headers={"X-Sidecar-Secret": "k"},
                    json={"action": "on_publish", "app": "live", "stream": "../etc"})
    assert r.status_code == 400 and list(host.state) == ["live/cam9"]


# -- the Wowza REST poller against the fake WSE ----------------------------------------------

@pytest.fixture
def wse() -> Iterator[FakeWowzaRest]:
    fake = FakeWowzaRest().start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("auth", ["digest", "basic", "none"])
def test_wowza_adds_and_removes_streams(wse: FakeWowzaRest, auth: str) -> None:
    wse.auth = auth
    wse.set_streams("live", {"cam1": True, "cam2": False, "bad..name": True})

    async def go() -> None:
        disc, host, _ = make()
        poller = WowzaPoller(disc, wse.url, ("live",), user="admin", password="secret")
        assert await poller.poll_once() == {"live": {"cam1", "bad..name"}}
        assert host.state == {"live/cam1": "running"}
        assert host.inputs["live/cam1"] == "rtmp://127.0.0.1:1935/live/cam1"
        wse.set_streams("live", {"cam1": True, "cam2": True})
        await poller.poll_once()
        assert host.state == {"live/cam1": "running", "live/cam2": "running"}
        wse.set_streams("live", {"cam2": True})
        await poller.poll_once()
        await disc.settle()
        assert host.state == {"live/cam1": "stopped", "live/cam2": "running"}
        wse.set_streams("live", {"cam2": False})
        await poller.poll_once()
        await disc.settle()
        assert host.state == {"live/cam1": "stopped", "live/cam2": "stopped"}
        assert poller.state == {"live": "ok"}

    asyncio.run(go())
    schemes = {s for _, s in wse.requests}
    assert schemes == ({None, "Digest"} if auth == "digest" else {None, "Basic"}
                       if auth == "basic" else {None})


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_wowza_wrong_credentials_one_clear_line(wse: FakeWowzaRest, auth: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    wse.auth = auth
    wse.set_streams("live", {"cam1": True})

    async def go() -> None:
        disc, host, _ = make()
        poller = WowzaPoller(disc, wse.url, ("live",), user="admin", password="wrong")
        for _ in range(3):
            assert await poller.poll_once() == {}
        assert host.state == {}

    with caplog.at_level(logging.WARNING, "sidecar.discovery.wowza"):
        asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert f"credentials for user 'admin' refused (HTTP 401, {auth} auth)" in lines[0]


def test_wowza_without_credentials_says_so(wse: FakeWowzaRest,
                                           caplog: pytest.LogCaptureFixture) -> None:
    wse.set_streams("live", {"cam1": True})

    async def go() -> None:
        disc, host, _ = make()
        poller = WowzaPoller(disc, wse.url, ("live",))
        assert await poller.poll_once() == {}
        assert host.state == {}

    with caplog.at_level(logging.WARNING, "sidecar.discovery.wowza"):
        asyncio.run(go())
    assert "needs credentials (HTTP 401, server asks for Digest)" in caplog.text


def test_wowza_down_or_garbage_keeps_streams(wse: FakeWowzaRest,
                                             caplog: pytest.LogCaptureFixture) -> None:
    wse.auth = "basic"
    wse.set_streams("live", {"cam1": True})

    async def go() -> None:
        disc, host, _ = make()
        poller = WowzaPoller(disc, wse.url, ("live", "nosuch"), user="admin",
                             password="secret", timeout=2.0)
        await poller.poll_once()
        assert host.state == {"live/cam1": "running"}
        wse.garbage = True
        await poller.poll_once()
        await poller.poll_once()
        assert host.state == {"live/cam1": "running"}
        wse.garbage = False
        await poller.poll_once()
        wse.stop()
        await poller.poll_once()
        await poller.poll_once()
        await disc.settle()
        assert host.state == {"live/cam1": "running"}
        assert host.calls == [("add", "live/cam1")]

    with caplog.at_level(logging.INFO, "sidecar.discovery.wowza"):
        asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records]
    live = [ln for ln in lines if "application live" in ln]
    assert len(live) == 3, lines  # ok, garbage, ok: one line per change
    assert "answers garbage" in live[1]
    assert sum("application nosuch: HTTP 404" in ln for ln in lines) == 1
    down = [ln for ln in lines if "unreachable" in ln]
    assert len(down) == 1 and "keep running" in down[0], lines  # the server, once


# -- the node's runtime-stream API and the settings ------------------------------------------

def test_node_adds_stops_and_removes_a_stream(tmp_path: Path) -> None:
    from sidecar.cli import build_node
    from sidecar.errors import BadRequest, NotFound
    from sidecar.settings import load_settings

    settings = load_settings(node_id="a", data_dir=tmp_path, discovery_callbacks=True,
                             segment_duration="1")
    node = build_node(settings)
    node.discovering = True
    spec = StreamSpec(app="live", name="cam1", input="synthetic:")

    async def go() -> None:
        assert (await node.readiness())[0] is True  # discovery node, nothing yet: ready
        rt = node.add_stream(spec)
        assert node.stream_state("live/cam1") == "running" and node.stream("live", "cam1") is rt
        assert rt.pipeline.cfg.duration == settings.duration_ticks  # the configured grid
        assert rt.files.root == tmp_path / "segments" / "live" / "cam1"
        ok, body = await node.readiness()
        assert ok is False and "live/cam1" in body["streams"]  # counted like any stream
        with pytest.raises(BadRequest, match="already running"):
            node.add_stream(spec)
        await node.stop_stream("live/cam1", wait=0.2)
        assert node.stream_state("live/cam1") == "stopped"
        assert rt.tasks[0].done() and not rt.tasks[1].done()  # reading stopped, backfill on
        assert node.stream("live", "cam1") is rt  # still served
        ok, body = await node.readiness()
        assert ok is True and body["streams"] == {}
        again = node.add_stream(spec)  # published again: a fresh pipeline
        assert again is not rt and node.stream_state("live/cam1") == "running"
        await node.stop_stream("live/cam1", wait=0.2)
        node.remove_stream("live/cam1")
        assert node.stream_state("live/cam1") == "absent"
        with pytest.raises(NotFound):
            node.stream("live", "cam1")
        await asyncio.sleep(0)
        assert all(t.done() for t in again.tasks)

    asyncio.run(go())


@pytest.mark.parametrize(("overrides", "message"), [
    ({"discovery_input": "rtmp://127.0.0.1/live/fixed"}, "needs {app} and {name}"),
    ({"discovery_input": "bogus://{app}/{name}"}, "unknown scheme"),
    ({"discovery_allow": ["10.0.0.0/33"]}, "allow-list"),
    ({"discovery_apps": ["vod"]}, "discovery application"),
    ({"discovery_apps": ["a/b"]}, "discovery application"),
    ({"wowza_rest": "wse:8087"}, "--wowza-rest"),
    ({"wowza_input": "rtmp://wse/{app}"}, "needs {app} and {name}"),
])
def test_discovery_settings_are_checked(tmp_path: Path, overrides: dict[str, object],
                                        message: str) -> None:
    from sidecar.errors import ConfigError
    from sidecar.settings import load_settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(data_dir=tmp_path, **overrides)


def test_discovery_settings_from_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.settings import load_settings

    monkeypatch.setenv("SIDECAR_DISCOVERY_ALLOW", "10.0.0.0/24, 127.0.0.1")
    monkeypatch.setenv("SIDECAR_DISCOVERY_APPS", "live,studio")
    s = load_settings(data_dir=tmp_path)
    assert s.discovery_allow == ["10.0.0.0/24", "127.0.0.1"]
    assert s.discovery_apps == ["live", "studio"]
    assert s.discovery_input == "rtmp://127.0.0.1:1935/{app}/{name}"
