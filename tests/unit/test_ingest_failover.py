"""Several inputs per stream: order, backoff, probing and moving back; continuity across
the move through the real pipeline. Fake media servers, an injected clock, no sleeps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sidecar.clock import ManualClock
from sidecar.errors import ConfigError, InputError
from sidecar.ingest.failover import FailoverSource, backoff, open_inputs
from sidecar.ingest.synthetic import SyntheticSource
from sidecar.model import Cut, Epoch, InputClosed, InputOpened, RawPacket, TrackInfo
from sidecar.node import Node as SidecarNode
from sidecar.node import StreamRuntime
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.server import create_app
from sidecar.settings import StreamSpec, load_settings
from sidecar.storage import StreamFiles
from sidecar.store.sqlite import SqliteStore
from tests import sim

S = 90_000
D = 2 * S
WALL0 = 1_800_000_000 * S + 31_415  # an arbitrary wall-clock start


# -- fakes -------------------------------------------------------------------------------


@dataclass
class Publish:
    """One publisher session on a media server: packets with their arrival times."""

    packets: list[RawPacket]
    start: int  # wall clock
    end: int


@dataclass
class FakeServer:
    """A media server: it has the stream while a publish is running, else refuses plays."""

    description: str
    clock: ManualClock
    publishes: list[Publish] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)  # shared log of reads, all servers

    def live(self, now: int) -> Publish | None:
        return next((p for p in self.publishes if p.start <= now < p.end), None)

    def connect(self, stop: threading.Event) -> FakeConn:
        now = self.clock.now()
        self.attempts.append(now)
        pub = self.live(now)
        if pub is None:
            raise InputError("stream not found")
        return FakeConn(self, pub, now)


@dataclass
class FakeConn:
    server: FakeServer
    pub: Publish
    since: int
    closed: bool = False

    @property
    def opened(self) -> InputOpened:
        return InputOpened(sim.tracks(), None, self.since)

    def packets(self) -> Iterator[RawPacket]:
        assert not self.closed
        self.server.reading.append(f"+{self.server.description}")
        try:
            for p in self.pub.packets:
                if p.arrival < self.since:
                    continue
                if p.arrival >= self.pub.end:
                    break
                self.server.clock.t = max(self.server.clock.t, p.arrival)
                yield p
        finally:
            self.server.reading.append(f"-{self.server.description}")
        # The publisher left (or the server died): the play ends.

    def close(self) -> None:
        self.closed = True


def ticker(n: int = 10_000, step: int = S // 25) -> list[RawPacket]:
    """Dummy packets 40 ms apart (the failover rules never look inside them)."""
    return [RawPacket(0, i * step, i * step, step, sim.TB, i % 50 == 0, b"x", WALL0 + i * step)
            for i in range(n)]


def make(clock: ManualClock, names: list[str], **kw: float) -> tuple[FailoverSource,
                                                                      list[FakeServer]]:
    log: list[str] = []
    servers = [FakeServer(n, clock, reading=log) for n in names]
    src = FailoverSource(servers, clock, name="live/x", spawn=lambda f: f(),
                         wait=lambda _ev, s: clock.advance(round(s * S)), **kw)
    return src, servers


def always(packets: list[RawPacket]) -> Publish:
    return Publish(packets, 0, 2**62)


# -- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "initial", "maximum", "expected"),
    [(0, 0.5, 8, 0.0), (1, 0.5, 8, 0.5), (2, 0.5, 8, 1.0), (3, 0.5, 8, 2.0), (5, 0.5, 8, 8.0),
     (9, 0.5, 8, 8.0), (1000, 0.5, 8, 8.0), (3, 1, 3, 3.0)],
)
def test_backoff_table(failures: int, initial: float, maximum: float, expected: float) -> None:
    assert backoff(failures, initial, maximum) == expected


@pytest.mark.parametrize(
    ("has", "chosen", "tried"),
    [
        ("YY", 0, [1, 0]),   # own server first; the other is not even tried
        ("NY", 1, [1, 1]),
        ("NNY", 2, [1, 1, 1]),
        ("YNY", 0, [1, 0, 0]),
        ("NYY", 1, [1, 1, 0]),
    ],
)
def test_prefers_the_earliest_input_that_has_the_stream(has: str, chosen: int,
                                                        tried: list[int]) -> None:
    clock = ManualClock(WALL0)
    src, servers = make(clock, [f"s{i}" for i in range(len(has))])
    for server, flag in zip(servers, has, strict=True):
        if flag == "Y":
            server.publishes.append(always(ticker(10)))
    conn = src.connect(threading.Event())
    assert src.active == chosen and conn.opened.arrival == WALL0
    assert [len(s.attempts) for s in servers] == tried
    status = src.status()
    assert status["active"] == f"s{chosen}"
    assert ("first choice" in str(status["reason"])) == (chosen == 0)
    if chosen:
        assert "s0: stream not found" in str(status["reason"])


def test_all_down_backs_off_then_gives_up_naming_every_input() -> None:
    clock = ManualClock(WALL0)
    src, servers = make(clock, ["a", "b"], retry_initial=0.5, retry_max=2,
                        connect_budget=6)
    with pytest.raises(InputError) as err:
        src.connect(threading.Event())
    assert "1 a: stream not found" in str(err.value) and "2 b: stream not found" in str(err.value)
    for s in servers:  # 0, +0.5, +1, +2, +2 (capped), then the 6 s budget is spent
        assert [round((t - WALL0) / S, 2) for t in s.attempts] == [0, 0.5, 1.5, 3.5, 5.5]
    assert clock.now() - WALL0 <= 6 * S
    assert src.status()["active"] is None


def test_stream_appears_on_the_second_input_while_down() -> None:
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"], retry_initial=0.5, retry_max=4)
    b.publishes.append(Publish(ticker(), WALL0 + 3 * S, 2**62))  # the encoder moves to b
    conn = src.connect(threading.Event())
    assert src.active == 1
    assert conn.opened.arrival == WALL0 + int(3.5 * S)  # the attempt at 0+0.5+1+2 s
    assert len(a.attempts) == len(b.attempts) == 4


def test_moves_back_to_the_preferred_input_when_the_stream_appears_there() -> None:
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"], backoff_initial=0.5, backoff_max=2,
                       retry_initial=0.5)
    b.publishes.append(always(ticker()))
    a.publishes.append(Publish(ticker(), WALL0 + 10 * S, 2**62))  # a gets it at 10 s
    stop = threading.Event()
    first = src.connect(stop)
    assert src.active == 1
    read = list(first.packets())  # ends by itself: a has the stream
    first.close()
    assert first.conn.closed  # type: ignore[attr-defined]
    # Probes of a: 0 (the first connect), then backed off while reading b: capped at 2 s.
    probes = [round((t - WALL0) / S, 2) for t in a.attempts]
    assert probes[:5] == [0, 0.52, 1.52, 3.52, 5.52]
    assert probes[-1] == pytest.approx(10, abs=2.1) and probes[-1] >= 10
    assert len(b.attempts) == 1  # b was read, never re-dialled
    assert read and read[-1].arrival <= a.attempts[-1]
    second = src.connect(stop)
    assert src.active == 0 and src.moves == 1
    assert "moved back" in str(src.status()["reason"])
    assert second.opened.arrival == a.attempts[-1]  # the probe's connection, not a new one
    next(iter(second.packets()))
    # At most one input read at a time: b's read ended before a's began.
    assert a.reading[:3] == ["+b", "-b", "+a"]


def test_no_probing_while_the_first_choice_is_read() -> None:
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"])
    a.publishes.append(Publish(ticker(500), 0, WALL0 + 20 * S))
    b.publishes.append(always(ticker()))
    conn = src.connect(threading.Event())
    assert len(list(conn.packets())) == 500
    conn.close()
    assert b.attempts == [] and src.status()["reason"] == "input 1 ended: end of input"
    assert src.status()["inputs"] == [  # type: ignore[comparison-overlap]
        {"url": "a", "state": "down", "error": "end of input", "failures": 0, "retry_in": 0,
         "connections": 1},
        {"url": "b", "state": "standby", "error": None, "failures": 0, "retry_in": 0,
         "connections": 0},
    ]


def test_a_failed_probe_does_not_disturb_the_current_read() -> None:
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"], backoff_initial=1, backoff_max=4, retry_initial=1)
    b.publishes.append(Publish(ticker(1000), 0, 2**62))
    conn = src.connect(threading.Event())
    assert len(list(conn.packets())) == 1000  # 40 s of packets, all read
    assert src.moves == 0
    gaps = [round((y - x) / S, 2) for x, y in zip(a.attempts, a.attempts[1:], strict=False)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 4.0] and max(gaps) <= 4.04
    assert len(a.attempts) <= 2 + 40 // 4 + 1  # bounded: capped backoff


def test_stop_discards_a_probe_connection() -> None:
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"], backoff_initial=0.5, backoff_max=1)
    b.publishes.append(always(ticker()))
    a.publishes.append(Publish(ticker(), WALL0 + 2 * S, 2**62))
    stop = threading.Event()
    conn = src.connect(stop)
    list(conn.packets())
    stop.set()
    conn.close()
    with pytest.raises(InputError, match="stopped"):
        src.connect(stop)


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "inputs"),
    [
        ("live/demo=rtmp://127.0.0.1:1935/live/demo|rtmp://10.0.0.12:1935/live/demo",
         ("rtmp://127.0.0.1:1935/live/demo", "rtmp://10.0.0.12:1935/live/demo")),
        ("live/demo= rtmp://a/live/demo | udp://127.0.0.1:5000 ",
         ("rtmp://a/live/demo", "udp://127.0.0.1:5000")),
        ("live/demo=synthetic:", ("synthetic:",)),
    ],
)
def test_stream_inputs_parse(text: str, inputs: tuple[str, ...]) -> None:
    spec = StreamSpec.parse(text)
    assert spec.inputs == inputs and spec.input == inputs[0]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("live/demo=rtmp://a/live/demo|", "empty input URL"),
        ("live/demo=rtmp://a/live/demo||rtmp://b/live/demo", "empty input URL"),
        ("live/demo=rtmp://a/live/demo|rtmp:///live/demo", "'rtmp:///live/demo': malformed"),
        ("live/demo=rtmp://a/live/demo|rtmp://b:19x5/live/demo", "'rtmp://b:19x5/live/demo'"),
        ("live/demo=rtmp://a/live/demo|rtnp://b/live/demo", "unknown scheme 'rtnp'"),
    ],
)
def test_malformed_input_in_the_list_is_named(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        StreamSpec.parse(text)


def test_inputs_from_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[streams]\n"live/a" = "rtmp://127.0.0.1/live/a|rtmp://10.0.0.2/live/a"\n')
    assert load_settings(cfg).streams[0].inputs == ("rtmp://127.0.0.1/live/a",
                                                    "rtmp://10.0.0.2/live/a")
    monkeypatch.setenv("SIDECAR_STREAMS", '["live/b=rtmp://h1/live/b|rtmp://h2/live/b"]')
    assert load_settings(None).streams[0].inputs == ("rtmp://h1/live/b", "rtmp://h2/live/b")
    monkeypatch.setenv("SIDECAR_STREAMS", '["live/b=rtmp://h1/live/b|rtmp://h2:x/live/b"]')
    with pytest.raises(ConfigError, match="rtmp://h2:x/live/b"):
        load_settings(None)


def test_open_inputs_one_or_several() -> None:
    clock = ManualClock(WALL0)
    one = open_inputs(["synthetic:"], clock, name="live/x", open_timeout=1, read_timeout=1)
    assert isinstance(one, SyntheticSource)
    two = open_inputs(["synthetic:", "synthetic:?fps=30"], clock, name="live/x",
                      open_timeout=1, read_timeout=1)
    assert isinstance(two, FailoverSource) and len(two.sources) == 2


# -- continuity across the move, through the real pipeline ----------------------------------


class Node:
    def __init__(self, name: str, root: Path, store: SqliteStore, servers: list[FakeServer],
                 clock: ManualClock) -> None:
        self.clock = clock
        self.files = StreamFiles(root / name, ("ts", "video", "audio"))
        self.source = FailoverSource(servers, clock, name="live/x", spawn=lambda f: f(),
                                     backoff_initial=0.5, backoff_max=2, connect_budget=4,
                                     wait=lambda _ev, s: clock.advance(round(s * S)))
        self.pipe = StreamPipeline(PipelineConfig("live/x", name, D), self.source, store,
                                   self.files, clock)
        self.published: list[int] = []
        publish = self.pipe.publish

        async def record(tracks: tuple[TrackInfo, ...], epoch: Epoch, cut: Cut,
                         cmaf: tuple[TrackInfo, ...] = (), **kw: Any) -> None:
            self.published.append(cut.number)
            await publish(tracks, epoch, cut, cmaf, **kw)

        self.pipe.publish = record  # type: ignore[method-assign]

        self.peers: list[Node] = []
        self.done = False

    async def _in_step(self) -> None:
        """Conservative lockstep: touch the shared store only when no peer is behind."""
        for _ in range(100_000):
            if all(p.done or p.clock.now() >= self.clock.now() for p in self.peers):
                return
            await asyncio.sleep(0)
        raise AssertionError("lockstep stuck")

    async def handle(self, item: object) -> None:
        await self._in_step()
        await self.pipe.handle(item)

    async def drive(self, until: int) -> None:
        """What the Reader does, without threads: connect, read, close, retry (bounded)."""
        stop = threading.Event()
        try:
            for _ in range(200):
                if self.clock.now() >= until:
                    return
                try:
                    conn = self.source.connect(stop)
                except InputError:
                    self.clock.advance(S // 2)  # the Reader's own backoff
                    await self._in_step()
                    await self.pipe.tick()
                    continue
                await self.handle(conn.opened)
                for p in conn.packets():
                    await self.handle(p)
                    if self.clock.now() >= until:
                        break
                conn.close()
                await self.handle(InputClosed("end of input", error=False))
                self.clock.advance(S // 2)
            raise AssertionError("driver did not finish")
        finally:
            self.done = True

    def segments(self) -> dict[int, bytes]:
        d = self.files.dirs["ts"]
        return {n: d.path_for(n).read_bytes() for n in d.numbers()}


def timed(packets: list[RawPacket], wall: int, latency: int = 0) -> list[RawPacket]:
    return sim.arrive(packets, wall, latency)


def run_nodes(nodes: list[Node], until: int) -> None:
    for n in nodes:
        n.peers = [p for p in nodes if p is not n]

    async def go() -> None:
        await asyncio.gather(*(n.drive(until) for n in nodes))

    asyncio.run(go())


@pytest.mark.parametrize("first", ["a", "b"])
def test_planned_move_restarted_timestamps_same_new_epoch_on_every_node(
        tmp_path: Path, first: str) -> None:
    """Encoder on host A's server for 20 s, gone 3 s, then on B's with timestamps from 0."""
    store = SqliteStore(tmp_path / "t.db")
    one, two = sim.feed(20), sim.feed(20, first_gop=20)
    moved = WALL0 + 23 * S
    nodes = {}
    for name, lat in (("a", 0), ("b", 30 * 90)):
        clock = ManualClock(WALL0 + lat)
        srv_a = FakeServer("A", clock, [Publish(timed(one, WALL0, lat), 0,
                                                WALL0 + 20 * S + lat)])
        srv_b = FakeServer("B", clock, [Publish(timed(two, moved, lat), moved, 2**62)])
        own = [srv_a, srv_b] if name == "a" else [srv_b, srv_a]
        nodes[name] = Node(name, tmp_path, store, own, clock)
    order = [nodes[first], nodes["b" if first == "a" else "a"]]
    run_nodes(order, moved + 16 * S)
    epochs = store.epochs("live/x")
    assert [e.index for e in epochs] == [0, 1]
    a, b = nodes["a"], nodes["b"]
    assert a.source.states[1].reads == 1 and b.source.states[0].reads == 1  # both followed
    fa, fb = a.segments(), b.segments()
    shared = set(fa) & set(fb)
    assert len(shared) >= 15 and all(fa[n] == fb[n] for n in shared), (sorted(fa), sorted(fb))
    for node in (a, b):
        assert node.published == sorted(set(node.published))  # never twice, never back
        assert node.pipe.status.divergent == 0
    records = store.segments("live/x", 0)
    last0 = max(r.number for r in records if r.epoch == 0)
    first1 = min(r.number for r in records if r.epoch == 1)
    # Epoch 0 starts on the slot of WALL0; its 20 s fill ten slots, the last of them open
    # when the encoder left: it is published when the next epoch begins.
    assert last0 == WALL0 // D + 9
    assert last0 in shared  # ... published by both nodes, identically
    assert first1 > last0 and first1 in (moved // D, moved // D + 1)
    # The node that reconnected later joined the new epoch mid-run: it leaves the slots it
    # did not see from their start to its peer, nothing else.
    assert set(fa) ^ set(fb) <= {first1, first1 + 1}


def test_move_back_to_a_relay_continues_the_epoch(tmp_path: Path) -> None:
    """Node a's own server comes up at 9 s relaying the same publisher (same timestamps):
    a moves back to it in the same epoch, and publishes no partial slot twice."""
    store = SqliteStore(tmp_path / "t.db")
    feed = sim.feed(30)
    nodes = []
    for name, up in (("b", 0), ("a", 9 * S)):
        clock = ManualClock(WALL0)
        srv_own = FakeServer("own", clock, [Publish(timed(feed, WALL0, 50 * 90),
                                                    WALL0 + up, 2**62)])
        srv_other = FakeServer("other", clock, [Publish(timed(feed, WALL0, 20 * 90), 0, 2**62)])
        nodes.append(Node(name, tmp_path, store, [srv_own, srv_other], clock))
    run_nodes(nodes, WALL0 + 29 * S)
    b, a = nodes
    assert [e.index for e in store.epochs("live/x")] == [0]
    assert a.source.moves == 1 and a.source.active in (0, None)
    assert a.published == sorted(set(a.published))
    n0 = WALL0 // D
    fa, fb = a.segments(), b.segments()
    assert set(fa) <= set(fb) and all(fa[n] == fb[n] for n in fa)
    missing = sorted(set(fb) - set(fa))
    # Only the slots around the move (the open one and the join margin) are left to peers.
    assert missing and len(missing) <= 2 and all(n0 + 4 <= n <= n0 + 7 for n in missing)
    assert a.pipe.status.divergent == 0 and b.pipe.status.divergent == 0


def test_losing_the_current_input_restarts_every_backoff() -> None:
    """Probes of the preferred input backed off to the cap while b was read; when b dies
    the encoder reconnects elsewhere, so a is tried again at once, not a cap later."""
    clock = ManualClock(WALL0)
    src, (a, b) = make(clock, ["a", "b"], backoff_initial=0.5, backoff_max=8)
    b.publishes.append(Publish(ticker(), 0, WALL0 + 30 * S))  # host b dies at 30 s
    a.publishes.append(Publish(ticker(), WALL0 + 33 * S, 2**62))  # encoder on a at 33 s
    stop = threading.Event()
    conn = src.connect(stop)
    list(conn.packets())
    clock.t = WALL0 + 30 * S
    assert src.states[0].failures >= 5  # backed off to the cap meanwhile
    conn.close()
    assert src.reason == "input 2 ended: end of input"
    died = clock.now()
    src.connect(stop)
    assert src.active == 0
    # Fresh, short retries: 0, 0.25, 0.75, then every second; the stream is there at 3 s.
    assert [round((t - died) / S, 2) for t in a.attempts if t >= died] == [
        0, 0.25, 0.75, 1.75, 2.75, 3.75]


def test_streams_endpoint_says_which_input_is_read_and_why(tmp_path: Path) -> None:
    clock = ManualClock(WALL0)
    src, (_, b) = make(clock, ["rtmp://a/live/x", "rtmp://b/live/x"])
    b.publishes.append(always(ticker(10)))
    src.connect(threading.Event())
    store = SqliteStore(tmp_path / "t.db")
    spec = StreamSpec.parse("live/x=rtmp://a/live/x|rtmp://b/live/x")
    settings = load_settings(node_id="n", data_dir=tmp_path / "n",
                             streams=["live/x=rtmp://a/live/x|rtmp://b/live/x"])
    pipe = StreamPipeline(PipelineConfig("live/x", "n", D, outputs=("ts",)), src, store,
                          StreamFiles(tmp_path / "segs", ("ts",)), clock)
    node = SidecarNode(settings, store, clock, {"live/x": StreamRuntime(spec, pipe)})
    with TestClient(create_app(node, run_pipelines=False)) as client:
        body = client.get("/streams").json()["live/x"]
    assert body["input"] == "rtmp://a/live/x"
    inputs = body["inputs"]
    assert inputs["active"] == "rtmp://b/live/x" and inputs["active_index"] == 1
    assert inputs["reason"] == ("the stream is not on the preferred input(s): "
                                "1 rtmp://a/live/x: stream not found")
    assert [i["state"] for i in inputs["inputs"]] == ["down", "active"]
