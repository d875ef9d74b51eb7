"""`sidecar demo`: two nodes, each running its own copy of the clock-locked test source."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ManagedProcess, ProcessRegistry, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_demo_nodes_publish_identical_segments(procs: ProcessRegistry, workdir: Path) -> None:
    base = free_port()
    while True:  # need base and base+1
        try:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            base = free_port()
    demo = ManagedProcess([sys.executable, "-m", "sidecar", "demo", "--base-port", str(base),
                           "--data-dir", str(workdir / "demo"), "--segment-duration", "2",
                           "--duration", "40"], workdir, name="demo", registry=procs)
    urls = [f"http://127.0.0.1:{base + i}/live/demo" for i in (0, 1)]

    def numbers(url: str) -> list[int]:
        try:
            r = httpx.get(f"{url}/src/media.m3u8", timeout=3)
        except httpx.HTTPError:
            return []
        return [int(x.split(".")[0]) for x in r.text.splitlines() if x.endswith(".ts")]

    wait_until(lambda: len(set(numbers(urls[0])) & set(numbers(urls[1]))) >= 4, 45, 0.5,
               what="4 segments on both demo nodes")
    def status(i: int) -> dict[str, int]:
        r = httpx.get(f"http://127.0.0.1:{base + i}/streams", timeout=3)
        return r.json()["live/demo"]["status"]  # type: ignore[no-any-return]

    # Node b encoded and muxed segments itself, each equal to the timeline's first version.
    wait_until(lambda: status(1)["published"] >= 3, 30, 0.5, what="3 segments muxed by b")
    assert status(0)["divergent"] == 0 and status(1)["divergent"] == 0
    shared = sorted(set(numbers(urls[0])) & set(numbers(urls[1])))
    for n in shared:
        a, b = (httpx.get(f"{u}/src/{n}.ts", timeout=5) for u in urls)
        assert a.status_code == b.status_code == 200 and a.content == b.content
    # The CMAF outputs of the same cuts and the epoch's init segments: identical too.
    for path in [f"{kind}/{n}.m4s" for kind in ("video", "audio") for n in shared] + [
            "video/init-0.mp4", "audio/init-0.mp4"]:
        a, b = (httpx.get(f"{u}/{path}", timeout=5) for u in urls)
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        assert a.content == b.content, path
    for path in ("cmaf.m3u8", "manifest.mpd"):
        assert all(httpx.get(f"{u}/{path}", timeout=5).status_code == 200 for u in urls)
    assert "http://127.0.0.1" in demo.log_text()
