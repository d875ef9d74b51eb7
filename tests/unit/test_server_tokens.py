"""Playback tokens at the HTTP edge: every media answer needs one, manifests carry it on."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import m3u8
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from fixtures.vod import make_clip
from sidecar.clock import ManualClock
from sidecar.errors import ConfigError
from sidecar.node import Node, StreamRuntime
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.security import tokens
from sidecar.server import create_app
from sidecar.settings import StreamSpec, load_settings
from sidecar.storage import StreamFiles
from sidecar.store.sqlite import SqliteStore
from tests.unit.test_server_cmaf import INITS, N0, NS, D, S, epoch, publish

SECRET = "s3cret"
NOW_S = (N0 + 8) * D // S + 2  # the nodes' clock, in Unix seconds


def make_node(root: Path, name: str, store: SqliteStore, clock: ManualClock,
              **token: object) -> Node:
    settings = load_settings(node_id=name, data_dir=root / name, segment_wait=0.2,
                             streams=["live/demo=synthetic:"], token_secret=SECRET, **token)
    files = StreamFiles(root / name / "segs", ("ts", "video", "audio"))
    pipe = StreamPipeline(PipelineConfig("live/demo", name, D, outputs=("ts", "cmaf")),
                          None, store, files, clock)  # type: ignore[arg-type]
    return Node(settings, store, clock,
                {"live/demo": StreamRuntime(StreamSpec.parse("live/demo=synthetic:"), pipe)})


def cluster(tmp_path: Path, **token: object) -> tuple[Node, Node]:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock((N0 + 8) * D + 2 * S)
    a, b = (make_node(tmp_path, n, store, clock, **token) for n in ("a", "b"))
    store.create_epoch(epoch(0))
    for node in (a, b):
        for kind, data in INITS.items():
            node.streams["live/demo"].files.inits[kind].write(0, data)
    for n in range(N0, N0 + 6):
        publish([a, b], n)
    return a, b


@pytest.fixture
def nodes(tmp_path: Path) -> tuple[Node, Node]:
    return cluster(tmp_path)


def token(start: int = NOW_S - 60, end: int = NOW_S + 3600) -> str:
    return tokens.sign_wowza(tokens.WowzaPolicy(SECRET), "live", "demo", start=start, end=end)


def crawl(client: TestClient, url: str) -> dict[str, tuple[int, bytes]]:
    """Every URL reachable from ``url`` (manifests followed), fetched as a player would."""
    seen: dict[str, tuple[int, bytes]] = {}
    todo = [url]
    while todo:
        u = todo.pop()
        if u in seen:
            continue
        r = client.get(u)
        seen[u] = (r.status_code, r.content)
        assert r.status_code == 200, (u, r.text)
        if u.split("?")[0].endswith(".m3u8"):
            pl = m3u8.loads(r.text)
            uris = [p.uri for p in pl.playlists] + [m.uri for m in pl.media if m.uri]
            uris += [s.uri for s in pl.segments] + [m.uri for m in pl.segment_map or []]
        elif u.split("?")[0].endswith(".mpd"):
            root = etree.fromstring(r.content)
            uris = []
            for tpl in root.iterfind(".//d:SegmentTemplate", NS):
                uris.append(tpl.get("initialization"))
                t = int(tpl.find("d:SegmentTimeline/d:S", NS).get("t"))
                uris.append(tpl.get("media").replace("$Time$", str(t)))
        else:
            continue
        todo += [urljoin(u, x) for x in uris]
    return seen


@pytest.mark.parametrize("entry", ["/live/demo/playlist.m3u8", "/live/demo/cmaf.m3u8",
                                   "/live/demo/manifest.mpd"])
def test_a_token_reaches_every_child_and_nodes_answer_alike(nodes: tuple[Node, Node],
                                                            entry: str) -> None:
    a, b = nodes
    query = token()
    with TestClient(create_app(a, run_pipelines=False)) as ca, \
            TestClient(create_app(b, run_pipelines=False)) as cb:
        got = crawl(ca, f"{entry}?{query}")
        assert len(got) >= 4  # the entry, a media playlist or init, segments
        for url, answer in got.items():
            # Every child URI carries exactly the token, in the canonical order.
            assert url.endswith("?" + query), url
            # The other node gives the same bytes for the same URL: a balancer may mix.
            r = cb.get(url)
            assert (r.status_code, r.content) == answer, url
            # Without the token each of them is refused.
            bare = ca.get(urlsplit(url).path)
            assert bare.status_code == 403, url
            assert bare.json() == {"error": "playback token required"}


def test_refusals_are_short_and_leak_nothing(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        good = token()
        bad_hash = re.sub(r"hash=[^&]+", "hash=AAAA", good)
        for path, query, reason in [
            ("/live/demo/playlist.m3u8", bad_hash, "invalid playback token"),
            (f"/live/demo/src/{N0}.ts", token(end=NOW_S - 1), "playback token expired"),
            ("/live/demo/video/init-0.mp4", token(start=NOW_S + 60),
             "playback token not valid yet"),
            ("/live/other/playlist.m3u8", good, "invalid playback token"),
            (f"/live/demo/audio/{N0}.m4s", good.replace("wowzatokenendtime", "wowzatokenEnd"),
             "invalid playback token"),
        ]:
            r = c.get(f"{path}?{query}", headers={"Origin": "http://player.example"})
            assert r.status_code == 403, (path, r.text)
            assert r.json() == {"error": reason}
            assert SECRET not in r.text and "hash" not in r.text
            # The player sees why (CORS) and which node said it.
            assert r.headers["access-control-allow-origin"] == "*"
            assert r.headers["x-node"] == "a"


def test_health_readiness_and_time_stay_open(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        for path in ("/healthz", "/readyz", "/time", "/streams", "/cluster"):
            assert c.get(path).status_code != 403, path


def test_conditional_get_and_head_with_a_token(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    with TestClient(create_app(a, run_pipelines=False)) as c:
        url = f"/live/demo/src/media.m3u8?{token()}"
        r = c.get(url)
        assert "?wowzatoken" in r.text and r.headers["content-length"] == str(len(r.content))
        again = c.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        head = c.head(url)
        assert head.status_code == 200 and head.headers["etag"] == r.headers["etag"]
        assert "content-length" not in head.headers or head.headers["content-length"] == str(
            len(r.content))


def test_ip_bound_tokens_behind_a_balancer(tmp_path: Path) -> None:
    a, _ = cluster(tmp_path, token_include_ip=True, token_ip_header="X-Forwarded-For")
    policy = tokens.WowzaPolicy(SECRET, include_ip=True)
    query = tokens.sign_wowza(policy, "live", "demo", end=NOW_S + 60, client_ip="192.0.2.7")
    with TestClient(create_app(a, run_pipelines=False)) as c:
        url = f"/live/demo/src/{N0}.ts?{query}"
        assert c.get(url, headers={"X-Forwarded-For": "10.0.0.1, 192.0.2.7"}).status_code == 200
        assert c.get(url, headers={"X-Forwarded-For": "192.0.2.7, 10.0.0.1"}).status_code == 403
        assert c.get(url).status_code == 403  # TestClient's own address


def test_hmac_tokens(tmp_path: Path) -> None:
    a, _ = cluster(tmp_path, token_scheme="hmac")
    policy = tokens.HmacPolicy(SECRET)
    query = tokens.sign_hmac(policy, "/live/", NOW_S + 60)
    with TestClient(create_app(a, run_pipelines=False)) as c:
        got = crawl(c, f"/live/demo/playlist.m3u8?{query}")
        assert all(u.endswith("?" + query) for u in got)
        late = tokens.sign_hmac(policy, "/live/", NOW_S - 1)
        r = c.get(f"/live/demo/playlist.m3u8?{late}")
        assert r.status_code == 403 and r.json() == {"error": "playback token expired"}


def test_vod_routes_need_the_token_too(tmp_path: Path) -> None:
    root = tmp_path / "movies"
    root.mkdir()
    shutil.copy(make_clip(tmp_path / "clip.mp4", 4), root / "clip.mp4")
    settings = load_settings(node_id="v", data_dir=tmp_path / "data", vod_roots=[root],
                             segment_duration="2", token_secret=SECRET)
    node = Node(settings, SqliteStore(tmp_path / "t.db"), ManualClock(NOW_S * S), {})
    policy = tokens.WowzaPolicy(SECRET)
    query = tokens.sign_wowza(policy, "vod", "clip.mp4", end=NOW_S + 60)
    with TestClient(create_app(node, run_pipelines=False)) as c:
        assert c.get("/vod/clip.mp4/playlist.m3u8").status_code == 403
        got = crawl(c, f"/vod/clip.mp4/playlist.m3u8?{query}")
        assert any(u.split("?")[0].endswith(".ts") for u in got)
        assert all(u.endswith("?" + query) for u in got)
        assert c.get("/vod/clip.mp4/src/0.ts").status_code == 403
        # Wowza-style path: the instance is explicit and "mp4:" is part of the stream name.
        wowza = "/vod/_definst_/mp4:clip.mp4/playlist.m3u8"
        assert c.get(f"{wowza}?{query}").status_code == 403  # mp4: is part of the name
        named = tokens.sign_wowza(policy, "vod", "mp4:clip.mp4", end=NOW_S + 60)
        assert c.get(f"{wowza}?{named}").status_code == 200


def test_settings_refuse_an_empty_secret_and_never_show_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_secret"):
        load_settings(data_dir=tmp_path, token_secret="")
    with pytest.raises(ConfigError, match="token_hash"):
        load_settings(data_dir=tmp_path, token_secret="x", token_hash="md5")
    settings = load_settings(data_dir=tmp_path, token_secret="hunter2")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize("fetcher_secret", [SECRET, None])
def test_peer_fetches_prove_the_secret_instead_of_a_token(tmp_path: Path,
                                                          fetcher_secret: str | None) -> None:
    a, b = cluster(tmp_path)
    n = N0 + 6  # on node a only: b must fetch it from a
    publish([a], n)
    assert b.streams["live/demo"].files.get("ts", n) is None
    now = b.clock.now()
    b.store.add_holder("live/demo", n, "a")
    b.store.heartbeat("a", "http://node-a", now)
    b.peers.secret = fetcher_secret
    app_a = create_app(a, run_pipelines=False)
    answers: list[int] = []

    async def seen(response: httpx.Response) -> None:
        answers.append(response.status_code)

    b.peers._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app_a),
                                        event_hooks={"response": [seen]})
    with TestClient(create_app(b, run_pipelines=False)) as cb:
        r = cb.get(f"/live/demo/src/{n}.ts?{token()}")
    if fetcher_secret is not None:
        assert r.status_code == 200 and r.content == a.streams["live/demo"].files.get(
            "ts", n).path.read_bytes()
        assert b.peers.fetched == 1 and answers == [200]
    else:  # a refused b's fetch: b had nothing to serve
        assert r.status_code != 200 and b.peers.fetched == 0 and answers == [403]


def test_peer_auth_is_bound_to_path_secret_and_time() -> None:
    value = tokens.peer_auth(SECRET, "live/demo/src/7.ts", 1000)
    assert tokens.check_peer_auth(SECRET, "/live/demo/src/7.ts", value, 1000 + 60)
    assert not tokens.check_peer_auth(SECRET, "/live/demo/src/7.ts", value, 1000 + 61)
    assert not tokens.check_peer_auth(SECRET, "/live/demo/src/8.ts", value, 1000)
    assert not tokens.check_peer_auth("other", "/live/demo/src/7.ts", value, 1000)
    assert not tokens.check_peer_auth(SECRET, "/live/demo/src/7.ts", "1060.AAAA", 1000)
    assert not tokens.check_peer_auth(SECRET, "/live/demo/src/7.ts", "garbage", 1000)
    # The expiry is part of what is signed: a later one is not accepted.
    later = f"99999.{value.partition('.')[2]}"
    assert not tokens.check_peer_auth(SECRET, "/live/demo/src/7.ts", later, 1000)
