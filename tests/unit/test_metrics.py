"""/metrics: Prometheus text that parses, and counters that move where things happen."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sidecar.clock import ManualClock
from sidecar.errors import InputError
from sidecar.ingest.reader import Reader
from sidecar.metrics import error_cause
from sidecar.model import InputOpened, Part, RawPacket, SegmentRecord
from sidecar.node import Node, StreamRuntime
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.server import create_app
from sidecar.settings import StreamSpec, load_settings
from sidecar.storage import StreamFiles
from sidecar.store.mirrored import MirroredStore
from sidecar.store.sqlite import SqliteStore
from tests import sim
from tests.fakes.static_http import serve_bytes
from tests.unit.test_store_mirrored import Flaky, Tick

S = 90_000
D = 4 * S
WALL0 = 1_800_000_000 * S + 123_456
KEY = "live/x"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_node(root: Path, name: str, store: object, clock: ManualClock,
              **options: object) -> Node:
    settings = load_settings(node_id=name, data_dir=root / name, segment_wait=0.2,
                             streams=[f"{KEY}=synthetic:"], **options)
    files = StreamFiles(root / name / "segs", ("ts", "video", "audio"))
    pipe = StreamPipeline(PipelineConfig(KEY, name, D), None,  # type: ignore[arg-type]
                          store, files, clock)  # type: ignore[arg-type]
    spec = StreamSpec.parse(f"{KEY}=synthetic:")
    return Node(settings, store, clock, {KEY: StreamRuntime(spec, pipe)})  # type: ignore[arg-type]


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def play(node: Node, packets: list[RawPacket]) -> None:
    pipe = node.streams[KEY].pipeline
    assert isinstance(node.clock, ManualClock)
    for p in packets:
        node.clock.t = max(node.clock.t, p.arrival)
        await pipe.handle(p)


def test_segments_published_epochs_and_dropped_packets(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    a = make_node(tmp_path, "a", store, ManualClock(WALL0))
    b = make_node(tmp_path, "b", store, ManualClock(WALL0))
    a.streams[KEY].pipeline.metrics.publish_delay = 1.0
    packets = sim.feed(20)
    late = int(3.7 * S)  # B joins late: it drops what came before its first whole slot
    with TestClient(create_app(a, run_pipelines=False)) as ca, \
            TestClient(create_app(b, run_pipelines=False)) as cb:
        before_a, before_b = scrape(ca), scrape(cb)
        assert value(before_a, "sidecar_segments_published_total", stream=KEY) == 0
        assert value(before_b, "sidecar_packets_dropped_total", stream=KEY,
                     reason="before_start") == 0

        async def go() -> None:
            await a.streams[KEY].pipeline.handle(sim.opened(WALL0))
            await b.streams[KEY].pipeline.handle(sim.opened(WALL0 + late))
            events = [(p.arrival, 0, p) for p in sim.arrive(packets, WALL0)]
            events += [(p.arrival, 1, p) for p in sim.arrive(
                [p for p in packets if (p.dts or 0) >= late], WALL0, 80 * 90)]
            for _, who, p in sorted(events, key=lambda e: (e[0], e[1])):
                await play(a if who == 0 else b, [p])

        asyncio.run(go())
        a.streams[KEY]._cache = None  # the node caches records for 100 ms (real time)
        sa, sb = scrape(ca), scrape(cb)

    pa, pb = a.streams[KEY].pipeline, b.streams[KEY].pipeline
    assert pa.status.published >= 3 and pb.status.published >= 2
    assert value(sa, "sidecar_segments_published_total", stream=KEY) == pa.status.published
    assert value(sb, "sidecar_segments_published_total", stream=KEY) == pb.status.published
    for part in ("ts", "video", "audio"):
        d = pa.files.dirs[part]
        size = sum(d.path_for(n).stat().st_size for n in d.numbers())
        assert value(sa, "sidecar_published_bytes_total", stream=KEY, part=part) == size
    assert value(sa, "sidecar_epochs_started_total", stream=KEY, origin="created") == 1
    assert value(sb, "sidecar_epochs_started_total", stream=KEY, origin="adopted") == 1
    assert ("sidecar_epochs_started_total",
            frozenset({"stream": KEY, "origin": "adopted"}.items())) not in sa
    assert value(sa, "sidecar_discontinuities_total", stream=KEY) == 0
    assert value(sb, "sidecar_packets_dropped_total", stream=KEY, reason="before_start") > 0
    assert value(sa, "sidecar_packets_dropped_total", stream=KEY, reason="before_start") == 0
    assert value(sa, "sidecar_segment_divergences_total", stream=KEY) == 0
    # The same newest packet, 80 ms later on B: the input delay says so.
    delay_a = value(sa, "sidecar_input_delay_seconds", stream=KEY)
    assert value(sb, "sidecar_input_delay_seconds", stream=KEY) - delay_a == pytest.approx(0.08)
    # A published each segment as its closing packet arrived: listed publish_delay later.
    count = value(sa, "sidecar_listing_latency_seconds_count", stream=KEY)
    assert count == pa.status.published
    assert value(sa, "sidecar_listing_latency_seconds_sum", stream=KEY) == pytest.approx(count)
    assert value(sa, "sidecar_listing_latency_seconds_bucket", stream=KEY, le="0.5") == 0
    assert value(sa, "sidecar_listing_latency_seconds_bucket", stream=KEY, le="1.0") == count
    assert value(sa, "sidecar_ready") == 1 and value(sa, "sidecar_stream_ready", stream=KEY) == 1


def test_encoder_restart_is_a_discontinuity(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    a = make_node(tmp_path, "a", store, ManualClock(WALL0))
    first = sim.arrive(sim.feed(12), WALL0)
    restart = WALL0 + 14 * S  # timestamps from 0 again: a new epoch

    async def go() -> None:
        pipe = a.streams[KEY].pipeline
        await pipe.handle(sim.opened(WALL0))
        await play(a, first)
        await pipe.handle(sim.opened(restart))
        await play(a, sim.arrive(sim.feed(12), restart))

    asyncio.run(go())
    with TestClient(create_app(a, run_pipelines=False)) as c:
        samples = scrape(c)
    assert value(samples, "sidecar_epochs_started_total", stream=KEY, origin="created") == 2
    assert value(samples, "sidecar_discontinuities_total", stream=KEY) == 1


class _Conn:
    def __init__(self, opened: InputOpened, packets: list[RawPacket], error: str | None
                 ) -> None:
        self.opened, self._packets, self._error = opened, packets, error

    def packets(self) -> Iterator[RawPacket]:
        yield from self._packets
        if self._error:
            raise InputError(self._error)

    def close(self) -> None:
        pass


class _Script:
    """A source that plays a script of connection attempts, then stops the reader."""

    description = "script"

    def __init__(self, steps: list[str | _Conn]) -> None:
        self.steps = steps

    def connect(self, stop: threading.Event) -> _Conn:
        step = self.steps.pop(0)
        if not self.steps:
            stop.set()
        if isinstance(step, str):
            raise InputError(step)
        return step


def test_ingest_connects_reconnects_and_errors_by_cause(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    a = make_node(tmp_path, "a", store, ManualClock(WALL0))
    opened = sim.opened(WALL0)
    packets = sim.arrive(sim.feed(2), WALL0)[:3]
    source = _Script(["cannot open: Connection refused",
                      _Conn(opened, packets, "read failed: read timeout"),
                      "cannot open: Server returned 404 Not Found",
                      _Conn(opened, packets, None)])
    loop = asyncio.new_event_loop()
    try:
        queue: asyncio.Queue[object] = asyncio.Queue()
        reader = Reader(KEY, source, loop, queue, backoff_initial=0, backoff_max=0,  # type: ignore[arg-type]
                        metrics=a.streams[KEY].pipeline.metrics)
        reader._run()  # in this thread: the script stops it after its last step
    finally:
        loop.close()
    with TestClient(create_app(a, run_pipelines=False)) as c:
        samples = scrape(c)
    assert value(samples, "sidecar_ingest_connects_total", stream=KEY) == 2
    assert value(samples, "sidecar_ingest_reconnects_total", stream=KEY) == 1
    errors = {dict(k[1])["stage"] + "/" + dict(k[1])["cause"]: v for k, v in samples.items()
              if k[0] == "sidecar_ingest_errors_total"}
    assert errors == {"connect/refused": 1, "read/timeout": 1, "connect/not_found": 1}


def test_error_causes_are_a_fixed_vocabulary() -> None:
    assert error_cause("cannot open: Connection timed out") == "timeout"
    assert error_cause("cannot open: no flv stream found in what was received") == "no_stream"
    assert error_cause("too much invalid data: boom") == "invalid_data"
    assert error_cause("stopped") == "stopped"
    assert error_cause("cannot open: Input/output error") == "other"


def test_peer_fetches_and_hash_mismatches(tmp_path: Path) -> None:
    good = b"\x47" * 188 * 4
    store = SqliteStore(tmp_path / "t.db")
    n = (WALL0 // D) - 2
    clock = ManualClock((n + 1) * D + 3 * S)
    me = make_node(tmp_path, "me", store, clock)
    liar, liar_url = serve_bytes(good + b"x")
    peer, peer_url = serve_bytes(good)
    try:
        record = SegmentRecord(KEY, n, 0, n * D, D,
                               (Part("ts", hashlib.sha256(good).hexdigest(), len(good)),),
                               (n + 1) * D, "peer")
        store.put_segment(record)
        for holder, url in (("a-liar", liar_url), ("peer", peer_url)):
            store.add_holder(KEY, n, holder)
            store.heartbeat(holder, url, clock.now())
        with TestClient(create_app(me, run_pipelines=False)) as c:
            before = scrape(c)
            r = c.get(f"/{KEY}/src/{n}.ts")
            assert r.status_code == 200 and r.content == good
            after = scrape(c)
    finally:
        liar.shutdown()
        peer.shutdown()
    fetched = ("sidecar_peer_fetches_total", frozenset({"stream": KEY, "kind": "segment"}.items()))
    assert fetched not in before and after[fetched] == 1
    assert value(after, "sidecar_peer_hash_mismatches_total", stream=KEY) == 1
    assert me.peers.fetched == 1 and me.peers.rejected == 1


def test_http_requests_by_route_template_per_app(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    clock = ManualClock(WALL0)
    a, b = make_node(tmp_path, "a", store, clock), make_node(tmp_path, "b", store, clock)
    with TestClient(create_app(a, run_pipelines=False)) as ca, \
            TestClient(create_app(b, run_pipelines=False)) as cb:
        for n in (11, 12, 13):
            assert ca.get(f"/{KEY}/src/{n}.ts").status_code == 404
        assert ca.get("/healthz").status_code == 200
        assert ca.get("/no/such/thing/here/at/all").status_code == 404
        sa, sb = scrape(ca), scrape(cb)
    segment = "/{app_name}/{name}/{rendition}/{segment}"
    assert value(sa, "sidecar_http_requests_total", method="GET", route=segment,
                 status="404") == 3
    assert value(sa, "sidecar_http_requests_total", method="GET", route="/healthz",
                 status="200") == 1
    assert value(sa, "sidecar_http_requests_total", method="GET", route="/{path:path}",
                 status="404") == 1
    assert value(sa, "sidecar_http_request_duration_seconds_count", route=segment) == 3
    routes = {dict(k[1]).get("route") for k in sa if k[0].startswith("sidecar_http_")}
    assert not any(r and ("11" in r or "live/x" in r) for r in routes)  # templates only
    # Another app in the same process counts only its own requests.
    assert ("sidecar_http_requests_total", frozenset(
        {"method": "GET", "route": segment, "status": "404"}.items())) not in sb
    assert value(sa, "sidecar_info", node="a", version=_version()) == 1


def test_refused_before_routing_counts_as_unmatched(tmp_path: Path) -> None:
    a = make_node(tmp_path, "a", SqliteStore(tmp_path / "t.db"), ManualClock(WALL0),
                  token_secret="s3cret")
    with TestClient(create_app(a, run_pipelines=False)) as c:
        assert c.get(f"/{KEY}/src/media.m3u8").status_code == 403  # no token
        samples = scrape(c)  # /metrics itself needs none
    assert value(samples, "sidecar_http_requests_total", method="GET", route="(unmatched)",
                 status="403") == 1


def _version() -> str:
    from sidecar import __version__

    return __version__


def test_readiness_and_degraded_store(tmp_path: Path) -> None:
    flaky = Flaky(SqliteStore(tmp_path / "cluster.db"))
    tick = Tick()
    store = MirroredStore(flaky, SqliteStore(tmp_path / "mirror.db"),  # type: ignore[arg-type]
                          monotonic=tick)
    a = make_node(tmp_path, "a", store, ManualClock(WALL0))
    with TestClient(create_app(a, run_pipelines=False)) as c:
        up = scrape(c)
        flaky.down = True
        tick.t += 5
        a.streams[KEY]._cache = None  # readiness asks the store again (no 100 ms cache)
        down = scrape(c)
    assert value(up, "sidecar_store_degraded") == 0
    assert value(down, "sidecar_store_degraded") == 1
    assert value(up, "sidecar_store_round_trip_seconds_count", outcome="ok") > 0
    assert value(down, "sidecar_store_round_trip_seconds_count", outcome="error") == 1
    # Nothing published yet: not ready, and the stream says why.
    assert value(up, "sidecar_ready") == 0
    assert value(up, "sidecar_stream_ready", stream=KEY) == 0
