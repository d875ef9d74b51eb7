"""Discovery end to end: nginx-rtmp's ``on_publish``/``on_publish_done`` start and stop a
stream nobody configured, on two sidecar nodes sharing a real Redis.

nginx-rtmp calls one URL per event, so its HTTP server fans the callback out: the request
goes to node A (whose answer nginx-rtmp obeys) and is mirrored to node B (``mirror``, whose
answer is ignored). A publisher under a new name is packaged by both nodes, byte-identical;
when it leaves, both stop reading, keep the window servable for the linger time, then
forget the stream. A publisher under a name that is not a valid stream name is refused
(400), nothing starts, and nginx-rtmp drops it (a 4xx on ``on_publish`` does that).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import (
    FfmpegEncoder,
    NginxRtmp,
    ProcessRegistry,
    RedisServer,
    free_port,
    wait_until,
)
from tests.e2e.sidecar_node import SidecarNode, fetch_together

pytestmark = pytest.mark.e2e

SECRET = "e2e-discovery-secret"
LINGER = 6


def _listed(node: SidecarNode, key: str) -> bool:
    r = node.get("/discovery")
    return r.status_code == 200 and key in r.json()["streams"]


def test_nginx_on_publish_discovery(workdir: Path, procs: ProcessRegistry) -> None:
    redis = RedisServer(workdir / "redis", registry=procs).start()
    rtmp_port, http_port = free_port(), free_port()
    template = f"rtmp://127.0.0.1:{rtmp_port}/{{app}}/{{name}}"
    nodes = [SidecarNode(n, workdir, [], store=redis.url, segment_duration="2",
                         registry=procs, extra=[
                             "--discovery-callbacks", "--discovery-secret", SECRET,
                             "--discovery-linger", str(LINGER), "--discovery-input", template])
             for n in ("a", "b")]
    a, b = nodes
    hook = f"http://127.0.0.1:{http_port}/discovery/nginx?secret={SECRET}"
    nginx = NginxRtmp(
        workdir / "nginx", rtmp_port, http_port, registry=procs,
        extra_app_conf=f"on_publish {hook};\non_publish_done {hook};\n",
        extra_http_conf=(
            "location /discovery/ {\n"
            "    mirror /mirror-b;\n"
            f"    proxy_pass http://127.0.0.1:{a.port};\n"
            "}\n"
            "location = /mirror-b {\n"
            "    internal;\n"
            f"    proxy_pass http://127.0.0.1:{b.port}$request_uri;\n"
            "}\n"))
    nginx.start()
    for node in nodes:
        node.start()
    # Nothing configured, nothing discovered yet: ready (a discovery node waits for streams).
    for node in nodes:
        assert node.get("/readyz").status_code == 200, node.get("/readyz").text
        assert node.get("/discovery").json()["streams"] == {}

    key = "live/cam7"
    enc = FfmpegEncoder(nginx.rtmp_url("cam7"), keyint_seconds=2.0, logdir=workdir,
                        name="encoder", registry=procs).start()
    published = time.monotonic()
    wait_until(lambda: all(_listed(n, key) for n in nodes), timeout=3.0, interval=0.05,
               what="both nodes packaging live/cam7")
    packaging_s = time.monotonic() - published
    wait_until(lambda: all(n.segment_numbers(key) for n in nodes), timeout=15.0,
               interval=0.1, what="a listed segment on both nodes")
    first_listed_s = time.monotonic() - published
    print(f"publish -> packaging on both nodes {packaging_s:.2f} s, -> first listed "
          f"segment on both {first_listed_s:.2f} s")
    wait_until(lambda: all(len(n.segment_numbers(key)) >= 4 for n in nodes), timeout=20.0,
               interval=0.2, what="four listed segments")
    # Same playlist at the same instant (allowing one boundary between the two answers).
    equal = 0
    for _ in range(10):
        ra, rb = fetch_together(nodes, f"/{key}/src/media.m3u8")
        assert ra.status_code == rb.status_code == 200
        equal += ra.text == rb.text
        time.sleep(0.3)
    assert equal >= 8, f"playlists equal in only {equal} of 10 simultaneous fetches"
    numbers = sorted(set(a.segment_numbers(key)) & set(b.segment_numbers(key)))
    assert len(numbers) >= 3
    for number in numbers:
        for path in (f"/{key}/src/{number}.ts", f"/{key}/video/{number}.m4s"):
            ra, rb = (n.get(path) for n in nodes)
            assert ra.status_code == rb.status_code == 200, path
            assert hashlib.sha256(ra.content).digest() == hashlib.sha256(rb.content).digest(), (
                f"{path} differs between the nodes")
    for node in nodes:
        streams = node.get("/streams").json()
        assert streams[key]["input"] == template.format(app="live", name="cam7")

    # The publisher leaves: both nodes stop, the window stays servable, then expires.
    enc.stop()
    left = time.monotonic()
    wait_until(lambda: not any(_listed(n, key) for n in nodes), timeout=8.0, interval=0.1,
               what="both nodes stopped live/cam7")
    stopped_s = time.monotonic() - left
    wait_until(lambda: all(key in n.get("/discovery").json()["stopped"] for n in nodes),
               timeout=8.0, interval=0.1, what="both nodes no longer reading live/cam7")
    reading_s = time.monotonic() - left
    time.sleep(1.5)  # the last segments (the drained open one too) wait --publish-delay
    last = [max(n.segment_numbers(key)) for n in nodes]
    for node in nodes:
        newest = max(node.segment_numbers(key))
        assert node.get(f"/{key}/src/{newest}.ts").status_code == 200
        assert node.get("/readyz").status_code == 200  # a stopped stream is not required
    time.sleep(2.5)
    assert [max(n.segment_numbers(key)) for n in nodes] == last, "still growing after stop"
    # The final window, the drained last segment included, is the same bytes on both.
    final = sorted(set(a.segment_numbers(key)) | set(b.segment_numbers(key)))
    assert a.segment_numbers(key) == b.segment_numbers(key) == final
    for number in final[-3:]:
        ra, rb = (n.get(f"/{key}/src/{number}.ts") for n in nodes)
        assert ra.status_code == rb.status_code == 200 and ra.content == rb.content, number
    wait_until(lambda: all(n.get(f"/{key}/src/media.m3u8").status_code == 404 for n in nodes),
               timeout=LINGER + 5, interval=0.2, what="live/cam7 forgotten after the linger")
    print(f"publisher left -> unlisted on both nodes {stopped_s:.2f} s, reading stopped "
          f"{reading_s:.2f} s; forgotten after "
          f"{time.monotonic() - left:.1f} s (linger {LINGER} s)")

    # A name that is not a valid stream name: 400 to nginx-rtmp, which drops the publisher.
    bad = FfmpegEncoder(nginx.rtmp_url("bad..name"), keyint_seconds=2.0, logdir=workdir,
                        name="bad-encoder", registry=procs).start()
    wait_until(lambda: not bad.running, timeout=10.0, interval=0.1,
               what="nginx-rtmp drops the refused publisher")
    for node in nodes:
        assert node.get("/discovery").json()["streams"] == {}
        assert node.get("/live/bad..name/src/media.m3u8").status_code in (400, 404)
    assert "refused" in a.log_text() and "bad..name" in a.log_text()
    assert httpx.get(f"http://127.0.0.1:{a.port}/healthz").status_code == 200


def test_wowza_rest_discovery(workdir: Path, procs: ProcessRegistry) -> None:
    """A real node polling the fake WSE REST API (digest auth) starts and stops a stream
    that a real nginx-rtmp relays, as the fake's answers change."""
    from tests.fakes.wowza_rest import FakeWowzaRest

    wse = FakeWowzaRest(auth="digest").start()
    try:
        nginx = NginxRtmp(workdir / "nginx", registry=procs).start()
        template = f"rtmp://127.0.0.1:{nginx.rtmp_port}/{{app}}/{{name}}"
        node = SidecarNode("w", workdir, [], segment_duration="2", registry=procs, extra=[
            "--wowza-rest", wse.url, "--wowza-user", "admin", "--wowza-password", "secret",
            "--wowza-input", template, "--wowza-poll", "1", "--discovery-linger", "4"]).start()
        key = "live/cam3"
        wse.set_streams("live", {"cam3": False})
        FfmpegEncoder(nginx.rtmp_url("cam3"), keyint_seconds=2.0, logdir=workdir,
                      name="encoder", registry=procs).start()
        time.sleep(1.5)
        assert not _listed(node, key)  # listed by WSE but not connected: not packaged
        wse.set_streams("live", {"cam3": True, "other": False})
        connected = time.monotonic()
        wait_until(lambda: _listed(node, key), timeout=3.0, interval=0.05,
                   what="live/cam3 packaged")
        wait_until(lambda: len(node.segment_numbers(key)) >= 2, timeout=15.0, interval=0.1,
                   what="two listed segments")
        print(f"WSE says connected -> first listed segments {time.monotonic() - connected:.2f} s")
        wse.set_streams("live", {})
        gone = time.monotonic()
        wait_until(lambda: not _listed(node, key), timeout=3.0, interval=0.05,
                   what="live/cam3 stopped")
        wait_until(lambda: node.get(f"/{key}/src/media.m3u8").status_code == 404,
                   timeout=15.0, interval=0.2, what="live/cam3 forgotten after the linger")
        print(f"WSE says gone -> forgotten {time.monotonic() - gone:.2f} s (linger 4 s)")
        log = node.log_text()
        assert "application live answers (digest auth)" in log
        assert {s for _, s in wse.requests} == {None, "Digest"}
    finally:
        wse.stop()
