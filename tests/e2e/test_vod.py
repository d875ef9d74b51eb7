"""VOD end to end: two real HTTP servers (uvicorn) over copies of the same files.

The VOD router is mounted in an app of the test's own, in front of a catch-all route as
the live server has one. FFmpeg's HLS and DASH demuxers read every output over HTTP with
no error line, and both servers answer every URL with the same bytes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import m3u8
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from fixtures.vod import make_keyframes_at, vod_media
from sidecar.vod.routes import vod_router
from sidecar.vod.service import VodService
from tests.e2e.harness import free_port
from tests.e2e.vod_client import crawl

pytestmark = pytest.mark.e2e

SECONDS = 20
D = 4 * 90_000
GROUP = ",clip.mp4,nobframes.mp4,.urlset"  # two renditions, aligned, other grid offsets
FILES = ["clip.mp4", "faststart.mp4", "clip.mkv", "clip.ts", "nobframes.mp4", "audio.m4a",
         "gop5.mp4", GROUP]


class Server:
    """One VOD node: a uvicorn server in a thread."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.service = VodService([root], cache, D)
        app = FastAPI()
        app.include_router(vod_router(self.service))

        @app.api_route("/{path:path}", methods=["GET", "HEAD"])
        async def fallback(path: str) -> JSONResponse:  # the live server's catch-all
            return JSONResponse({"error": "no such resource"}, status_code=404)

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.service.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    base = tmp_path_factory.mktemp("vod-e2e")
    media = vod_media(base / "media", seconds=SECONDS)
    # GOPs of 5 s with D = 4 s: slots without a keyframe, segments longer than D.
    media["gop5.mp4"] = make_keyframes_at(base / "media" / "gop5.mp4", 25 * SECONDS,
                                          range(0, 25 * SECONDS, 125), bframes=2)
    started = []
    for name, mtime in (("a", 1_500_000_000), ("b", 1_650_000_000)):
        root = base / name / "movies"
        root.mkdir(parents=True)
        for path in media.values():
            shutil.copy(path, root / path.name)
            os.utime(root / path.name, (mtime, mtime))
        started.append(Server(base / name, base / f"{name}-cache"))
    yield started[0], started[1]
    for s in started:
        s.stop()


@pytest.mark.parametrize("name", FILES)
def test_both_servers_answer_every_url_with_the_same_bytes(servers: tuple[Server, Server],
                                                            name: str) -> None:
    a, b = servers
    with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url,
                                                                      timeout=30) as cb:
        got_a = crawl(ca, f"/vod/movies/{name}")
        got_b = crawl(cb, f"/vod/movies/{name}")
        assert got_a.keys() == got_b.keys()
        assert sum(u.endswith((".ts", ".m4s")) for u in got_a) >= 4
        for url, body in got_a.items():
            assert got_b[url] == body, url
            assert ca.head(url).headers["etag"] == cb.head(url).headers["etag"]


def ffmpeg_clean(url: str) -> tuple[set[str], float]:
    """Codecs ffprobe finds and the duration; ffprobe and a full ffmpeg decode print nothing."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name:format=duration", "-of", "csv=p=0", url],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    lines = probe.stdout.split()
    codecs = {line.strip(",") for line in lines if line[0].isalpha()}
    duration = float(next(line for line in lines if line[0].isdigit()))
    decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", url, "-f", "null",
                             "-"], capture_output=True, text=True, timeout=180)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    return codecs, duration


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.ts", "gop5.mp4", GROUP])
@pytest.mark.parametrize("entry", ["playlist.m3u8", "cmaf.m3u8", "manifest.mpd",
                                   "_definst_/mp4:{file}/playlist.m3u8",
                                   "_definst_/mp4:{file}/manifest.mpd"])
def test_ffmpeg_reads_every_output_over_http(servers: tuple[Server, Server], name: str,
                                             entry: str) -> None:
    a, _ = servers
    path = entry.format(file=f"movies/{name}") if "{file}" in entry else (
        f"movies/{name}/{entry}")
    codecs, duration = ffmpeg_clean(f"{a.url}/vod/{path}")
    assert codecs == ({"h264"} if name == "gop5.mp4" else {"h264", "aac"})
    assert abs(duration - SECONDS) < 0.2


def test_long_gops_give_segments_longer_than_d(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    text = httpx.get(f"{a.url}/vod/movies/gop5.mp4/src/media.m3u8").text
    pl = m3u8.loads(text)
    # keyframes every 5 s, D = 4 s: slot 1 [4, 8) holds the keyframe at 5 s, slot 3 at 15 s,
    # ...: every segment is one 5 s GOP; the numbers stay contiguous.
    assert [s.duration for s in pl.segments] == [5.0, 5.0, 5.0, 5.0]
    assert [s.uri for s in pl.segments] == ["0.ts", "1.ts", "2.ts", "3.ts"]
    assert pl.target_duration == 5


def test_raw_dot_dot_over_a_socket_is_refused(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        s.sendall(b"GET /vod/../../etc/passwd/playlist.m3u8 HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"not allowed" in answer


def test_first_segment_latency_cold_and_warm(tmp_path: Path,
                                             servers: tuple[Server, Server]) -> None:
    a, _ = servers
    fresh = Server(Path(a.service.roots[0]), tmp_path / "cold-cache")
    try:
        with httpx.Client(base_url=fresh.url, timeout=30) as c:
            t0 = time.perf_counter()
            assert c.get("/vod/movies/clip.mp4/playlist.m3u8").status_code == 200
            assert c.get("/vod/movies/clip.mp4/src/media.m3u8").status_code == 200
            assert c.get("/vod/movies/clip.mp4/src/2.ts").status_code == 200
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert c.get("/vod/movies/clip.mp4/src/3.ts").status_code == 200
            warm = time.perf_counter() - t0
    finally:
        fresh.stop()
    print(f"\nVOD {SECONDS} s clip: cold playlist+segment {cold * 1000:.0f} ms, "
          f"warm segment {warm * 1000:.0f} ms")
    assert cold < 5 and warm < 1
