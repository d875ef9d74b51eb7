"""Real-component tests of the end-to-end harness itself (ffmpeg, nginx-rtmp, HAProxy, Redis)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.harness import (
    FfmpegEncoder,
    Haproxy,
    NginxRtmp,
    ProcessRegistry,
    PythonHttpServer,
    RedisServer,
    ffmpeg_play,
    require_binary,
)

pytestmark = pytest.mark.e2e


def test_require_binary_fails_loudly() -> None:
    assert require_binary("ffmpeg").endswith("ffmpeg")
    with pytest.raises(RuntimeError, match=r"scripts/setup\.sh"):
        require_binary("definitely-not-a-binary-xyz")


def test_encoder_publishes_to_nginx_rtmp(procs: ProcessRegistry, workdir: Path) -> None:
    nginx = NginxRtmp(workdir / "nginx", registry=procs).start()
    enc = FfmpegEncoder(nginx.rtmp_url("cam"), logdir=workdir, registry=procs).start()
    nginx.wait_for_publisher("cam", timeout=15)
    time.sleep(0.5)

    result = ffmpeg_play(nginx.rtmp_url("cam"), seconds=4, logdir=workdir, timeout=30)
    assert result.ok, result.describe() + "\nnginx:\n" + nginx.log_tail()
    assert 3.5 <= result.elapsed < 25, result.describe()
    assert enc.running, enc.log_tail()

    # A restart is a new publish; playback works again afterwards.
    enc.restart(gap_seconds=0.5)
    time.sleep(1.0)
    result = ffmpeg_play(nginx.rtmp_url("cam"), seconds=2, logdir=workdir, timeout=30)
    assert result.ok, result.describe()


def _served_by(client: httpx.Client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, resp.text
    return resp.headers["X-Served-By"]


def test_haproxy_round_robin_and_health_check(procs: ProcessRegistry, workdir: Path) -> None:
    backends: list[PythonHttpServer] = []
    for name in ("a", "b"):
        root = workdir / f"backend-{name}"
        root.mkdir()
        (root / "readyz").write_text("ok\n")
        (root / "hello.txt").write_text(f"hello from {name}\n")
        backends.append(PythonHttpServer(root, name=f"http-{name}", registry=procs).start())

    lb = Haproxy(
        workdir / "haproxy",
        None,
        [(f"node-{n}", "127.0.0.1", b.port) for n, b in zip("ab", backends, strict=True)],
        health_path="/readyz",
        registry=procs,
    ).start()
    lb.wait_server_state("node-a", "UP", timeout=10)
    lb.wait_server_state("node-b", "UP", timeout=10)

    # One keep-alive client: every request must still be balanced on its own.
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        served = [_served_by(client, f"{lb.url}/hello.txt") for _ in range(8)]
    assert set(served) == {"node-a", "node-b"}, served
    assert all(x != y for x, y in itertools.pairwise(served)), served

    # Fail node-b's health check: it is taken out and node-a serves everything.
    (workdir / "backend-b" / "readyz").unlink()
    lb.wait_server_state("node-b", "DOWN", timeout=10)
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        served = [_served_by(client, f"{lb.url}/hello.txt") for _ in range(6)]
    assert served == ["node-a"] * 6, served

    # And it comes back when healthy again.
    (workdir / "backend-b" / "readyz").write_text("ok\n")
    lb.wait_server_state("node-b", "UP", timeout=10)
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        served = [_served_by(client, f"{lb.url}/hello.txt") for _ in range(4)]
    assert set(served) == {"node-a", "node-b"}, served
    assert "GET /hello.txt" in lb.log_text()  # request log goes to the process log


def test_redis_stop_and_restart_same_port(procs: ProcessRegistry, workdir: Path) -> None:
    server = RedisServer(workdir / "redis", registry=procs).start()
    client = server.client()
    try:
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"

        server.stop()
        assert not server.running
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()

        port = server.port
        server.start()
        assert server.port == port
        assert client.ping() is True  # redis-py reconnects by itself
        assert client.get("k") is None  # no persistence: a fresh, empty server
    finally:
        client.close()
