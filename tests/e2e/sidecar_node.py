"""A ``sidecar serve`` node as a real process, for end-to-end tests and benchmarks."""

from __future__ import annotations

import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import m3u8

from tests.e2e.harness import ManagedProcess, ProcessRegistry, free_port, wait_http


class SidecarNode:
    def __init__(self, node_id: str, workdir: Path, streams: list[str], *,
                 store: Path | str | None = None, segment_duration: str = "2",
                 extra: list[str] | None = None, registry: ProcessRegistry | None = None,
                 port: int | None = None) -> None:
        self.node_id = node_id
        self.port = port or free_port()
        self.data_dir = workdir / f"node-{node_id}"
        argv = [sys.executable, "-m", "sidecar", "serve", "--node-id", node_id,
                "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
                "--segment-duration", segment_duration]
        if store is not None:
            argv += ["--store", str(store)]
        for s in streams:
            argv += ["--stream", s]
        argv += extra or []
        self.process = ManagedProcess(argv, workdir, name=f"sidecar-{node_id}",
                                      registry=registry, start=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> SidecarNode:
        self.process.start()
        wait_http(f"{self.url}/healthz", timeout=timeout)
        return self

    def kill(self) -> None:
        self.process.stop(sig=signal.SIGKILL, timeout=5)

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def media_playlist(self, stream: str = "live/demo") -> m3u8.M3U8 | None:
        r = self.get(f"/{stream}/src/media.m3u8")
        return m3u8.loads(r.text) if r.status_code == 200 else None

    def segment_numbers(self, stream: str = "live/demo") -> list[int]:
        pl = self.media_playlist(stream)
        if pl is None:
            return []
        return [int(s.uri.split(".")[0]) for s in pl.segments]

    def log_text(self) -> str:
        return self.process.log_text()


def fetch_together(nodes: list[SidecarNode], path: str) -> list[httpx.Response]:
    """GET ``path`` from every node at (nearly) the same instant."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(lambda n: n.get(path), nodes))
