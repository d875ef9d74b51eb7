"""Prometheus metrics: what each part of a node counts, and one registry per app.

Components own their metric objects, unregistered (``registry=None``): a stream's pipeline
and reader share a :class:`StreamMetrics`, the peer fetcher a :class:`PeerMetrics`, the
mirrored store a :class:`StoreMetrics`. :class:`AppMetrics` (one per FastAPI app) has its own
``CollectorRegistry`` with the HTTP metrics and a collector that gathers the node's
components at scrape time, so streams added or removed at runtime appear and disappear, and
several apps in one process (tests, simulations) never share a number. Labels are bounded:
the stream key and small fixed vocabularies (part, reason, cause, route template), never a
segment number or a raw path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from sidecar.grid import TICKS_PER_SECOND

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from sidecar.model import Part, SegmentRecord
    from sidecar.node import Node
    from sidecar.segmenter import SegmenterStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
LISTING_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "(unmatched)"

# Input errors by cause: FFmpeg's and our own words, mapped onto a fixed vocabulary.
_CAUSES = (
    ("timeout", re.compile(r"time ?out|timed out", re.I)),
    ("refused", re.compile(r"refused", re.I)),
    ("not_found", re.compile(r"not found|no such|404", re.I)),
    ("no_stream", re.compile(r"no supported|stream found", re.I)),
    ("invalid_data", re.compile(r"invalid data", re.I)),
    ("stopped", re.compile(r"^stopped$|not (?:on|published)", re.I)),
)


def error_cause(message: str) -> str:
    """A bounded label for an input error message (``other`` when nothing fits)."""
    return next((name for name, rx in _CAUSES if rx.search(message)), "other")


def _seconds(ticks: int) -> float:
    return ticks / TICKS_PER_SECOND


class StreamMetrics:
    """One stream's counters, shared by its pipeline and its reader thread."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        # Seconds between a segment's first publication and its listing (set by the node).
        self.publish_delay = 0.0
        s = ["stream"]
        self._all: list[Any] = []
        self._segments = self._one(Counter(
            "sidecar_segments_published", "Segments this node published and kept", s,
            registry=None))
        self._bytes = self._add(Counter(
            "sidecar_published_bytes", "Bytes of published segment files", [*s, "part"],
            registry=None))
        self._divergent = self._one(Counter(
            "sidecar_segment_divergences", "Segments whose bytes differ from the timeline's "
            "(not kept; fetched from a peer)", s, registry=None))
        self._epochs = self._add(Counter(
            "sidecar_epochs_started", "Epochs entered, created by this node or adopted",
            [*s, "origin"], registry=None))
        self._discontinuities = self._one(Counter(
            "sidecar_discontinuities", "Epoch changes on this node's input (a discontinuity "
            "in the playlists)", s, registry=None))
        self._connects = self._one(Counter(
            "sidecar_ingest_connects", "Input connections opened", s, registry=None))
        self._reconnects = self._one(Counter(
            "sidecar_ingest_reconnects", "Input connections opened after the first", s,
            registry=None))
        self._errors = self._add(Counter(
            "sidecar_ingest_errors", "Input errors by stage and cause",
            [*s, "stage", "cause"], registry=None))
        self._dropped = self._add(Counter(
            "sidecar_packets_dropped", "Input packets not published, by reason",
            [*s, "reason"], registry=None))
        self._delay = self._one(Gauge(
            "sidecar_input_delay_seconds", "Arrival minus grid time of the newest input "
            "packet", s, registry=None))
        self._listing = self._one(Histogram(
            "sidecar_listing_latency_seconds", "From the packet that completed a segment to "
            "its listing (first publication + publish delay)", s, buckets=LISTING_BUCKETS,
            registry=None))
        for reason in ("before_start", "late"):
            self._dropped.labels(stream, reason)
        self._connected_once = False

    def _add(self, metric: Any) -> Any:
        self._all.append(metric)
        return metric

    def _one(self, metric: Any) -> Any:
        """Register ``metric`` for collection; return its child for this stream."""
        return self._add(metric).labels(self.stream)

    def collectors(self) -> tuple[Any, ...]:
        return tuple(self._all)

    # -- reader thread -------------------------------------------------------------------

    def connected(self) -> None:
        self._connects.inc()
        if self._connected_once:
            self._reconnects.inc()
        self._connected_once = True

    def input_error(self, stage: str, message: str) -> None:
        self._errors.labels(self.stream, stage, error_cause(message)).inc()

    # -- pipeline ------------------------------------------------------------------------

    def epoch(self, created: bool, previous: int | None, index: int) -> None:
        self._epochs.labels(self.stream, "created" if created else "adopted").inc()
        if previous is not None and previous != index:
            self._discontinuities.inc()

    def packet(self, arrival: int, grid_dts: int) -> None:
        self._delay.set(_seconds(arrival - grid_dts))

    def dropped(self, stats: SegmenterStats, before_start: int, late: int) -> None:
        """Count what the segmenter dropped since it had ``before_start``/``late``."""
        if stats.dropped_before_start != before_start:
            self._dropped.labels(self.stream, "before_start").inc(
                stats.dropped_before_start - before_start)
        if stats.dropped_late != late:
            self._dropped.labels(self.stream, "late").inc(stats.dropped_late - late)

    def published(self, parts: tuple[Part, ...], stored: SegmentRecord, same: bool,
                  completed_at: int | None) -> None:
        if not same:  # not kept: a peer's copy is served instead
            self._divergent.inc()
            return
        self._segments.inc()
        for p in parts:
            self._bytes.labels(self.stream, p.name).inc(p.size)
        if completed_at is not None:
            listed = _seconds(stored.available_at - completed_at) + self.publish_delay
            self._listing.observe(max(listed, 0.0))


class PeerMetrics:
    """Files fetched from peers, and peers not trusted."""

    def __init__(self) -> None:
        self._fetched = Counter("sidecar_peer_fetches", "Files fetched from peers (verified)",
                                ["stream", "kind"], registry=None)
        self._mismatch = Counter("sidecar_peer_hash_mismatches",
                                 "Files from peers whose SHA-256 is not the timeline's",
                                 ["stream"], registry=None)
        self._failed = Counter("sidecar_peer_fetch_failures", "Peer requests without the file",
                               ["stream", "reason"], registry=None)

    def collectors(self) -> tuple[Any, ...]:
        return self._fetched, self._mismatch, self._failed

    def fetched(self, stream: str, kind: str) -> None:
        self._fetched.labels(stream, kind).inc()

    def mismatch(self, stream: str) -> None:
        self._mismatch.labels(stream).inc()

    def failed(self, stream: str, reason: str) -> None:
        self._failed.labels(stream, reason).inc()


class StoreMetrics:
    """Round trips to the cluster store (the mirrored store's remote, e.g. Redis)."""

    def __init__(self) -> None:
        self._rtt = Histogram("sidecar_store_round_trip_seconds",
                              "Calls to the cluster store, by outcome", ["outcome"],
                              buckets=STORE_BUCKETS, registry=None)

    def collectors(self) -> tuple[Any, ...]:
        return (self._rtt,)

    def call(self, seconds: float, ok: bool) -> None:
        self._rtt.labels("ok" if ok else "error").observe(seconds)


def _merge(sources: Iterable[Any]) -> Iterator[Metric]:
    """One family per name: the same metric of several streams becomes one family."""
    families: dict[str, Metric] = {}
    for source in sources:
        for family in source.collect():
            merged = families.get(family.name)
            if merged is None:
                families[family.name] = family
            else:
                merged.samples.extend(family.samples)
    yield from families.values()


class _NodeCollector(Collector):
    """Gathers the node's component metrics and store state at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        sources: list[Any] = []
        for rt in list(node.streams.values()):
            sources.extend(rt.pipeline.metrics.collectors())
        sources.extend(node.peers.metrics.collectors())
        store_metrics = getattr(node.store, "metrics", None)
        if isinstance(store_metrics, StoreMetrics):
            sources.extend(store_metrics.collectors())
        yield from _merge(sources)
        status = getattr(node.store, "status", None)
        state: dict[str, Any] = status() if callable(status) else {}
        degraded = GaugeMetricFamily("sidecar_store_degraded",
                                     "1 while the cluster store is unreachable (local mirror)")
        degraded.add_metric([], 1.0 if state.get("degraded") else 0.0)
        yield degraded
        queued = GaugeMetricFamily("sidecar_store_queued_writes",
                                   "Writes waiting for the cluster store")
        queued.add_metric([], float(state.get("queued_writes") or 0))
        yield queued
        divergences = CounterMetricFamily(
            "sidecar_store_divergences", "Records decided differently while the store was "
            "unreachable (the cluster's adopted)")
        divergences.add_metric([], float(state.get("divergences") or 0))
        yield divergences


class AppMetrics:
    """One app's registry: HTTP metrics, readiness, and the node's components."""

    def __init__(self, node: Node, version: str) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("sidecar_http_requests", "HTTP requests by route template "
                                 "and status", ["method", "route", "status"], registry=r)
        self._latency = Histogram("sidecar_http_request_duration_seconds",
                                  "Time to the response's start, by route template",
                                  ["route"], buckets=HTTP_BUCKETS, registry=r)
        self._ready = Gauge("sidecar_ready", "1 when /readyz would answer 200", registry=r)
        self._stream_ready = Gauge("sidecar_stream_ready",
                                   "1 when the node can serve the stream's whole window",
                                   ["stream"], registry=r)
        self._stream_keys: set[str] = set()
        info = Gauge("sidecar_info", "This node's id and version", ["node", "version"],
                     registry=r)
        info.labels(node.settings.node_id, version).set(1)
        r.register(_NodeCollector(node))

    async def middleware(self, request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Count a request under its route template (``/{app_name}/{name}/...``)."""
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", None) or UNMATCHED
            self._requests.labels(request.method, route, str(status)).inc()
            self._latency.labels(route).observe(time.perf_counter() - start)

    async def exposition(self) -> bytes:
        """Refresh readiness, then the text exposition of everything."""
        from sidecar.errors import StoreError

        try:
            ok, body = await self.node.readiness()
        except StoreError:
            ok, body = False, {}
        self._ready.set(1 if ok else 0)
        streams = body.get("streams")
        for key in list(self.node.streams):
            entry = streams.get(key) if isinstance(streams, dict) else None
            ready = isinstance(entry, dict) and bool(entry.get("ready"))
            self._stream_ready.labels(key).set(1 if ready else 0)
        for key in self._stream_keys - self.node.streams.keys():  # removed at runtime
            self._stream_ready.remove(key)
        self._stream_keys = set(self.node.streams)
        return generate_latest(self.registry)
