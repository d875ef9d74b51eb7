"""Follow the encoder across hosts: each host has its own media server, the encoder
publishes to one of them at a time, every node lists its own server first.

Two hosts simulated on 127.0.0.1: nginx-rtmp A and B (``idle_streams off``: a play of a
stream that is not published is refused at once, as a media server should), node a with
``A|B``, node b with ``B|A``, one Redis, HAProxy round-robin per request, FFmpeg's HLS
client and hls.js in headless Chromium through the balancer. In one run:

1. planned move: the encoder publishes to A, stops, and 3 s later publishes to B with
   timestamps from 0 (nobody dies);
2. host death: host B (node b **and** nginx B) is SIGKILLed while the encoder is on B; 3 s
   later the encoder publishes to A; host B comes back 20 s later.

Checked: both nodes follow (``/streams`` says which input and why), both nodes' playlists
equal (or one segment apart at a boundary) at the same instant, no media sequence number
listed with two URIs, no 404 for a listed segment, segment numbers contiguous inside each
epoch, and the content lost at each move beyond the encoder's own absence, measured on the
timeline (epoch anchors give the encoder's own timestamps of what was published).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import m3u8
import pytest

from sidecar.store.redis import RedisStore
from tests.e2e.browser import start_in_browser
from tests.e2e.harness import (
    FfmpegEncoder,
    Haproxy,
    ManagedProcess,
    NginxRtmp,
    ProcessRegistry,
    RedisServer,
    require_binary,
    wait_http,
    wait_until,
)
from tests.e2e.sidecar_node import SidecarNode

pytestmark = pytest.mark.e2e

STREAM = "live/demo"
S = 90_000
ABSENCE = 3.0


@dataclass
class Watch:
    """Both nodes' playlists at the same instants, every listed segment fetched once."""

    nodes: list[SidecarNode]
    up: dict[str, bool]
    t0: float = field(default_factory=time.monotonic)
    seq_uris: dict[int, set[str]] = field(default_factory=dict)
    fetched: set[tuple[str, str]] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    equal: int = 0
    in_step: int = 0
    differ: list[str] = field(default_factory=list)
    polls: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with ThreadPoolExecutor(2) as pool:
            while not self.stop.is_set() and time.monotonic() < deadline:
                alive = [n for n in self.nodes if self.up[n.node_id]]
                texts = list(pool.map(self._playlist, alive))
                self.polls += 1
                for node, text in zip(alive, texts, strict=True):
                    if text is not None:
                        self._record(node, text)
                if len(alive) == 2 and all(t is not None for t in texts) and all(
                        self.up[n.node_id] for n in alive):
                    self._compare(texts[0], texts[1])  # type: ignore[arg-type]
                self.stop.wait(0.7)

    def _playlist(self, node: SidecarNode) -> str | None:
        try:
            r = httpx.get(f"{node.url}/{STREAM}/src/media.m3u8", timeout=3)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def _record(self, node: SidecarNode, text: str) -> None:
        pl = m3u8.loads(text)
        for i, seg in enumerate(pl.segments):
            seq = pl.media_sequence + i
            self.seq_uris.setdefault(seq, set()).add(seg.uri)
            if (node.node_id, seg.uri) in self.fetched:
                continue
            self.fetched.add((node.node_id, seg.uri))
            try:
                r = httpx.get(f"{node.url}/{STREAM}/src/{seg.uri}", timeout=10)
                status = r.status_code
            except httpx.HTTPError as exc:
                status = -1
                if not self.up[node.node_id]:
                    continue  # killed meanwhile
                self.missing.append(f"{node.node_id} {seg.uri}: {exc}")
                continue
            if status != 200 and self.up[node.node_id]:
                self.missing.append(f"{node.node_id} {seg.uri}: HTTP {status}")

    def _compare(self, a: str, b: str) -> None:
        if a == b:
            self.equal += 1
            return
        pa, pb = m3u8.loads(a), m3u8.loads(b)
        la = {pa.media_sequence + i: s.uri for i, s in enumerate(pa.segments)}
        lb = {pb.media_sequence + i: s.uri for i, s in enumerate(pb.segments)}
        common = set(la) & set(lb)
        same = all(la[n] == lb[n] for n in common)
        if same and abs(max(la, default=0) - max(lb, default=0)) <= 1:
            self.in_step += 1  # a boundary fell between the two answers
        else:
            self.differ.append(f"t={time.monotonic() - self.t0:.1f}s\n{a}\n---\n{b}")


def ffprobe_live(url: str, workdir: Path, seconds: float, procs: ProcessRegistry) -> ManagedProcess:
    ffprobe = require_binary("ffprobe")
    argv = [ffprobe, "-v", "error", "-rw_timeout", "15000000", "-select_streams", "v:0",
            "-show_entries", "packet=pts_time", "-of", "csv=p=0", "-read_intervals",
            f"%+{seconds}", url]
    return ManagedProcess(argv, workdir, name="ffprobe-hls", registry=procs)


def active_input(node: SidecarNode) -> dict[str, object]:
    body = node.get("/streams").json()[STREAM]["inputs"]
    assert isinstance(body, dict)
    return body


def lost_at_move(store: RedisStore, old: int, new: int, ran: float) -> tuple[float, float]:
    """Content lost at the end of epoch ``old`` and at the start of epoch ``new``, seconds.

    Grid time minus the epoch's anchor is the encoder's own timestamp, so the last published
    instant of ``old`` against how long the encoder ran there, and the first published
    instant of ``new`` against 0, are what no node published.
    """
    epochs = {e.index: e for e in store.epochs(STREAM)}
    records = store.segments(STREAM, 0)
    end_old = max(r.start + r.duration for r in records if r.epoch == old)
    start_new = min(r.start for r in records if r.epoch == new)
    shown_until = (end_old - epochs[old].anchor) / S
    return ran - shown_until, (start_new - epochs[new].anchor) / S


def contiguous_within_epochs(store: RedisStore) -> list[str]:
    records = sorted(store.segments(STREAM, 0), key=lambda r: r.number)
    out = []
    for x, y in itertools.pairwise(records):
        if y.epoch == x.epoch and y.number != x.number + 1:
            out.append(f"epoch {x.epoch}: {x.number} -> {y.number}")
        if y.epoch < x.epoch:
            out.append(f"epoch goes back at {y.number}")
    return out


def test_follow_the_encoder_planned_move_and_host_death(procs: ProcessRegistry,
                                                        workdir: Path) -> None:
    redis = RedisServer(workdir / "redis", registry=procs).start()
    nginx = {h: NginxRtmp(workdir / f"nginx-{h}", extra_app_conf="idle_streams off;",
                          registry=procs).start() for h in ("a", "b")}
    url = {h: n.rtmp_url("demo") for h, n in nginx.items()}
    enc = FfmpegEncoder(url["a"], keyint_seconds=2.0, logdir=workdir, registry=procs).start()
    nginx["a"].wait_for_publisher("demo")
    conf = workdir / "sidecar.toml"
    conf.write_text("open_timeout = 3\nread_timeout = 3\n")
    nodes = {h: SidecarNode(h, workdir, [f"{STREAM}={url[h]}|{url[o]}"], store=redis.url,
                            segment_duration="2", extra=["--config", str(conf)],
                            registry=procs)
             for h, o in (("a", "b"), ("b", "a"))}
    a, b = nodes["a"], nodes["b"]
    lb = Haproxy(workdir / "haproxy", None, [("a", "127.0.0.1", a.port),
                                             ("b", "127.0.0.1", b.port)],
                 redispatch_on_connection_failure=True, registry=procs).start()
    a.start()
    b.start()
    for n in (a, b):
        wait_http(f"{n.url}/readyz", timeout=40)
    # Both read A: a its own server, b its second choice (B does not have the stream).
    wait_until(lambda: active_input(a)["active"] == url["a"]
               and active_input(b)["active"] == url["a"], 15, 0.25, what="both reading A")
    assert active_input(a)["reason"] == "first choice"
    sb = active_input(b)
    assert sb["active"] == url["a"] and "not on the preferred" in str(sb["reason"]), sb
    lb.wait_server_state("a", "UP")
    lb.wait_server_state("b", "UP")

    total = 100.0
    play_url = f"{lb.url}/{STREAM}/playlist.m3u8"
    probe = ffprobe_live(play_url, workdir, total, procs)
    browser = start_in_browser(play_url, total, workdir, name="browser-hls", registry=procs)
    up = {"a": True, "b": True}
    watch = Watch([a, b], up)
    watcher = threading.Thread(target=watch.run, args=(total + 10,), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    store = RedisStore(redis.url)

    def at(t: float) -> None:
        time.sleep(max(0.0, t - (time.monotonic() - t0)))

    try:
        # 1. Planned move: A -> B, timestamps from 0 again.
        at(18)
        ran_a = time.time() - (enc.started_at or 0)
        enc.stop()
        time.sleep(ABSENCE)
        enc.rtmp_url = url["b"]
        enc.start()
        moved_1 = time.monotonic()
        wait_until(lambda: active_input(a)["active"] == url["b"]
                   and active_input(b)["active"] == url["b"], 15, 0.25,
                   what="both nodes reading B")
        follow_1 = time.monotonic() - moved_1
        sa = active_input(a)
        assert "not on the preferred" in str(sa["reason"]) and sa["moves"] == 1, sa
        assert active_input(b)["reason"] == "first choice"

        # 2. Host death: B (node and media server) SIGKILLed while the encoder is on B.
        at(48)
        ran_b = time.time() - (enc.started_at or 0)
        up["b"] = False
        b.kill()
        nginx["b"].kill()
        enc.kill()  # its RTMP session died with the host; the NLB sends it to A
        time.sleep(ABSENCE)
        enc.rtmp_url = url["a"]
        enc.start()
        moved_2 = time.monotonic()
        wait_until(lambda: active_input(a)["active"] == url["a"], 15, 0.25,
                   what="node a back on its own server")
        follow_2 = time.monotonic() - moved_2
        at(71)
        nginx["b"].start()
        b.start()
        up["b"] = True
        wait_until(lambda: httpx.get(f"{b.url}/readyz", timeout=3).status_code == 200, 40,
                   0.5, what="node b ready again")
        wait_until(lambda: active_input(b)["active"] == url["a"], 15, 0.25,
                   what="node b reading A, its second choice")
        sb = active_input(b)
        assert sb["active"] == url["a"] and "1 " + url["b"] in str(sb["reason"]), sb
        at(total + 2)
    finally:
        watch.stop.set()
        watcher.join(15)
    probe.stop(timeout=5)
    played = browser.result(60)

    epochs = store.epochs(STREAM)
    assert [e.index for e in epochs] == [0, 1, 2], epochs  # one new epoch per republish
    lost_1 = lost_at_move(store, 0, 1, ran_a)
    lost_2 = lost_at_move(store, 1, 2, ran_b)
    print(f"planned move: followed in {follow_1:.1f} s, lost {lost_1[0]:.2f} s at the end of "
          f"epoch 0 and {lost_1[1]:.2f} s at the start of epoch 1 (beyond the encoder's "
          f"{ABSENCE:g} s absence)")
    print(f"host death: followed in {follow_2:.1f} s, lost {lost_2[0]:.2f} s + "
          f"{lost_2[1]:.2f} s; watch: {watch.polls} polls, {watch.equal} equal, "
          f"{watch.in_step} in step, {len(watch.fetched)} segment fetches")
    # Content lost beyond the encoder's own absence: at most one keyframe interval (2 s)
    # per move. The encoder's start-up (~0.5 s before its first packet) counts as lost here.
    for what, (end, start) in (("planned move", lost_1), ("host death", lost_2)):
        assert end + start <= 2.0 + 0.5, f"{what}: lost {end:.2f} s + {start:.2f} s"
    assert contiguous_within_epochs(store) == []
    conflicts = {n: u for n, u in watch.seq_uris.items() if len(u) > 1}
    assert conflicts == {}, conflicts
    assert watch.missing == [], watch.missing
    assert watch.differ == [], watch.differ[:2]
    assert watch.equal >= 3 * watch.in_step and watch.equal >= 30, (watch.equal, watch.in_step)

    # FFmpeg's HLS client through the balancer: played to the end, forward only, and the
    # only holes are the two moves.
    log = probe.log_text()
    times = [float(x.rstrip(",")) for x in log.split() if re.fullmatch(r"\d+\.\d+,?", x)]
    errors = [ln for ln in log.splitlines()
              if ln.strip() and not ln.startswith("=== start")
              and not re.fullmatch(r"\d+\.\d+,?", ln.strip())]
    assert errors == [], errors[:10]
    assert len(times) > 25 * (total - 30), len(times)
    assert all(y >= x - 0.5 for x, y in itertools.pairwise(times))
    gaps = [round(y - x, 2) for x, y in itertools.pairwise(times) if y - x > 1.0]
    assert len(gaps) <= 2 and all(g < ABSENCE + 4 for g in gaps), gaps

    # hls.js in Chromium through the balancer: no fatal error, no failed media request,
    # stalls only at the two moves (each at most the encoder's absence plus 4 s), still
    # playing at the end.
    print(f"hls.js: {played.total_stall_seconds:.1f} s stalled ({len(played.stalls)} stalls, "
          f"longest {played.max_stall_seconds:.1f} s), played {played.current_time_advanced:.1f}"
          f" s, non-fatal {played.error_counts}")
    assert played.complete and played.fatal_errors == 0, played.describe()
    failed = [e for e in played.http_errors
              if re.search(r"\.(ts|m3u8)", str(e.get("url", "")))]
    assert failed == [], failed[:5]
    assert played.max_stall_seconds <= ABSENCE + 4, played.describe()
    assert played.total_stall_seconds <= 2 * (ABSENCE + 4), played.describe()
    assert played.current_time_advanced >= total - 2 * (ABSENCE + 4) - 15, played.describe()
    tail = [c for _, c in played.time_samples[-12:] if c is not None]
    assert len(tail) >= 2 and tail[-1] - tail[0] >= 2, played.time_samples[-12:]
