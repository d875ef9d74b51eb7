"""Watching the nodes: playlists fetched at the same instant, every listed segment captured.

Four times a second, every node's media playlist is fetched concurrently (one thread per
node, released together by a barrier). Each sample says, per packager, whether all of its
nodes that answered returned the same text. Once a second, every segment a playlist lists
is also captured once
(HTTP for the sidecar, the file for the peers) with the media sequence number it was first
listed under; a file that changes in place while listed is captured again as a new version.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from benchmarks.drift.media import SegmentMedia
from benchmarks.drift.packagers import Node, parse_playlist


@dataclass
class Seg:
    """One segment as published by one node (a rewrite in place is a new ``Seg``)."""

    packager: str
    node: str
    uri: str
    seq: int
    sha256: str
    size: int
    seen_wall: float
    media: SegmentMedia
    version: int = 0
    start_ms: float | None = None   # first video frame on the scenario's encoder timeline
    session: int | None = None


@dataclass
class _Known:
    stat: tuple[int, int] | None
    seg: Seg
    pending: tuple[int, int] | None = None   # a new stat seen, not yet stable


@dataclass
class PlaylistStats:
    samples: int = 0
    equal: int = 0
    partial: int = 0   # samples where some running node had no playlist to give
    examples: list[str] = field(default_factory=list)   # a few unequal samples


@dataclass
class NodeLog:
    segs: list[Seg] = field(default_factory=list)
    known: dict[str, _Known] = field(default_factory=dict)
    fetch_failures: int = 0
    failures: list[str] = field(default_factory=list)
    rewritten: int = 0      # listed segments whose content was replaced in place
    changing: int = 0       # times a listed segment file was seen changing
    fetch_ms_max: float = 0.0


class Collector:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.logs: dict[str, NodeLog] = {n.name: NodeLog() for n in nodes}
        self.playlists: dict[str, PlaylistStats] = {}
        for n in nodes:
            self.playlists.setdefault(n.packager, PlaylistStats())
        # Players wait for a segment (hls.js: 20 s); 10 s, and any wait over 1 s is reported.
        self.clients = {n.name: httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False)
                        for n in nodes}
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)))
        self.t0 = time.time()
        self.last_text: dict[str, str] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for c in self.clients.values():
            c.close()

    def _fetch_all(self, nodes: list[Node]) -> dict[str, str | None]:
        barrier = threading.Barrier(len(nodes))

        def fetch(node: Node) -> str | None:
            try:
                barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
            return node.playlist(self.clients[node.name])  # the sidecar answers at once

        futures = {n.name: self.pool.submit(fetch, n) for n in nodes}
        out: dict[str, str | None] = {}
        for name, fut in futures.items():
            try:
                out[name] = fut.result(timeout=10)
            except Exception:
                out[name] = None
        return out

    def tick(self, capture: bool = True) -> None:
        """One same-instant playlist sample; with ``capture``, also fetch what is listed."""
        live = [n for n in self.nodes if not n.down and n.proc.running]
        if not live:
            return
        texts = self._fetch_all(live)
        # -- same-instant playlist comparison, per packager ------------------------------
        by_packager: dict[str, list[str | None]] = {}
        nodes_of: dict[str, list[Node]] = {}
        for n in live:
            by_packager.setdefault(n.packager, []).append(texts[n.name])
            nodes_of.setdefault(n.packager, []).append(n)
        for packager, got in by_packager.items():
            if len(got) < 2:
                continue
            st = self.playlists[packager]
            if any(t is None for t in got):
                st.partial += 1
                continue
            st.samples += 1
            if len(set(got)) == 1:
                st.equal += 1
            elif len(st.examples) < 3:
                parts = []
                for n, text in zip(nodes_of[packager], got, strict=True):
                    pl = parse_playlist(text)
                    last = pl.uris[-1] if pl.uris else "-"
                    parts.append(f"{n.label}: media sequence {pl.media_sequence}, "
                                 f"{len(pl.uris)} entries, last {last}")
                st.examples.append(f"t={time.time() - self.t0:.2f}s " + "; ".join(parts))
        if not capture:
            return
        # -- capture what is listed ------------------------------------------------------
        now = time.time()
        for n in live:
            listing = parse_playlist(texts[n.name])
            if listing.text is None:
                continue
            self.last_text[n.name] = listing.text
            log = self.logs[n.name]
            for i, uri in enumerate(listing.uris):
                if uri in listing.gaps:
                    continue
                known = log.known.get(uri)
                stat = n.segment_stat(uri)
                if known is not None:
                    if known.stat is None:  # fetched before the node wrote its file
                        known.stat = stat
                        continue
                    if stat is None or stat == known.stat:
                        known.pending = None
                        continue
                    # Changed in place while listed: a player may get a torn file now.
                    # Capture the new content once it has stopped changing (one tick).
                    if known.pending != stat:
                        if known.pending is None:
                            log.changing += 1
                        known.pending = stat
                        continue
                t_fetch = time.monotonic()
                data = n.segment(uri, self.clients[n.name])
                wait_ms = (time.monotonic() - t_fetch) * 1000
                log.fetch_ms_max = max(log.fetch_ms_max, wait_ms)
                if data is None:
                    log.fetch_failures += 1
                    if len(log.failures) < 10:
                        log.failures.append(f"t={now - self.t0:.1f}s listed but not served "
                                            f"after {wait_ms:.0f} ms: {n.last_error}")
                    continue
                if wait_ms > 1000 and len(log.failures) < 10:
                    log.failures.append(f"t={now - self.t0:.1f}s listed segment {uri} served "
                                        f"only after {wait_ms:.0f} ms")
                stat = n.segment_stat(uri)  # a sidecar may write its file while serving
                sha = hashlib.sha256(data).hexdigest()
                if known is not None and known.seg.sha256 == sha:
                    known.stat, known.pending = stat, None
                    continue
                version = 0
                if known is not None:
                    version = known.seg.version + 1
                    log.rewritten += 1
                seg = Seg(n.packager, n.label, uri, listing.media_sequence + i, sha, len(data),
                          now, n.inspect(uri, data, listing, self.clients[n.name]), version)
                log.segs.append(seg)
                log.known[uri] = _Known(stat, seg)
