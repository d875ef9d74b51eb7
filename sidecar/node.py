"""What one node serves: the shared timeline's records, local files, and peers.

The HTTP edge (``server.py``) asks this module for manifests and files; everything here
is a function of the shared timeline, the clock and the node's local files, so two nodes
asked at the same instant answer the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from sidecar.clock import Clock
from sidecar.errors import BadRequest, NotFound, StoreError
from sidecar.grid import TICKS_PER_SECOND, seconds_to_ticks
from sidecar.manifests.hls import MEDIA_PLAYLIST, RENDITION, Variant
from sidecar.model import Epoch, SegmentRecord
from sidecar.peers import STALE_AFTER, PeerFetcher
from sidecar.pipeline import PipelineConfig, StreamPipeline
from sidecar.settings import NAME_RE, Settings, StreamSpec
from sidecar.storage import LocalSegment, StreamFiles
from sidecar.store import TimelineStore
from sidecar.timeline import (
    MediaPlaylist,
    Presentation,
    build_media_playlist,
    build_presentation,
    visible,
)

log = logging.getLogger(__name__)

DEFAULT_BANDWIDTH = 2_000_000
CMAF_PARTS = ("video", "audio")


class CmafUnavailable(NotFound):
    """The stream has no CMAF output (turned off, or a codec CMAF cannot carry)."""


@dataclass
class StreamRuntime:
    spec: StreamSpec
    pipeline: StreamPipeline
    _cache: tuple[float, list[SegmentRecord], dict[int, int]] | None = field(default=None)
    _epochs: dict[int, Epoch] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    _firsts_at: float = 0.0
    # Runtime streams (sidecar.discovery): its pipeline and backfill tasks, and when it
    # stopped reading (its window stays servable until it is removed).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped_at: float | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def files(self) -> StreamFiles:
        return self.pipeline.files


def build_runtime(settings: Settings, spec: StreamSpec, store: TimelineStore,
                  clock: Clock) -> StreamRuntime:
    """One stream's files, source and pipeline (configured or discovered alike)."""
    from sidecar.ingest.failover import open_inputs

    outputs = settings.outputs_for(spec.key)
    parts = (("ts",) if "ts" in outputs else ()) + (
        ("video", "audio") if "cmaf" in outputs else ())
    files = StreamFiles(settings.data_dir / "segments" / spec.app / spec.name, parts)
    recovered = files.recover()
    if recovered:
        logging.getLogger("sidecar").info("stream %s: %d segments recovered from disk",
                                          spec.key, recovered)
    source = open_inputs(spec.inputs or (spec.input,), clock, name=spec.key,
                         open_timeout=settings.open_timeout,
                         read_timeout=settings.read_timeout)
    cfg = PipelineConfig(stream=spec.key, node=settings.node_id,
                         duration=settings.duration_ticks,
                         keep_segments=settings.window + settings.retain_extra,
                         outputs=outputs)
    return StreamRuntime(spec, StreamPipeline(cfg, source, store, files, clock))


def cmaf_parts(record: SegmentRecord, epoch: Epoch | None) -> tuple[str, ...] | None:
    """The CMAF parts ``record`` must have to be listed, or ``None`` if it lacks one."""
    if epoch is None:
        return None
    need = tuple(t.kind for t in epoch.tracks if t.init is not None)
    if not need or any(record.part(k) is None for k in need):
        return None
    return need


class Node:
    """Everything one sidecar process serves: its streams, store and clock."""

    def __init__(self, settings: Settings, store: TimelineStore, clock: Clock,
                 streams: dict[str, StreamRuntime]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.streams = streams
        self.started = time.monotonic()
        self.peers = PeerFetcher(store, settings.node_id, secret=(
            settings.token_secret.get_secret_value() if settings.token_secret else None))
        # Streams come and go at runtime (discovery): a node with none yet is still ready.
        self.discovering = False

    # -- runtime streams ---------------------------------------------------------------

    def launch(self, rt: StreamRuntime) -> None:
        """Start ``rt``'s pipeline and backfill tasks (in the running event loop)."""
        rt.tasks = [asyncio.create_task(rt.pipeline.run(), name=f"pipeline-{rt.key}"),
                    asyncio.create_task(self.maintain(rt), name=f"backfill-{rt.key}")]

    def stream_tasks(self) -> list[asyncio.Task[None]]:
        return [t for rt in self.streams.values() for t in rt.tasks]

    def stream_state(self, key: str) -> str:
        """``running``, ``stopped`` (its window still served) or ``absent``."""
        rt = self.streams.get(key)
        return "absent" if rt is None else "running" if rt.stopped_at is None else "stopped"

    def add_stream(self, spec: StreamSpec) -> StreamRuntime:
        """Package ``spec`` from now on, exactly like a configured stream."""
        old = self.streams.get(spec.key)
        if old is not None and old.stopped_at is None:
            raise BadRequest(f"stream {spec.key} is already running")
        if old is not None:
            for t in old.tasks:
                t.cancel()
        rt = build_runtime(self.settings, spec, self.store, self.clock)
        self.streams[spec.key] = rt
        self.launch(rt)
        return rt

    async def stop_stream(self, key: str, wait: float = 2.0) -> None:
        """Stop reading ``key``; its window stays servable (and backfilled).

        Waits (at most ``wait`` s) for the input to end on its own, so the open segment
        holds every packet the media server sent, then publishes it.
        """
        rt = self.streams[key]
        deadline = time.monotonic() + wait
        while rt.pipeline.status.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        rt.stopped_at = time.monotonic()
        pipeline = rt.tasks[0] if rt.tasks else None
        if pipeline is not None:
            pipeline.cancel()
            await asyncio.wait({pipeline}, timeout=10)
        try:
            await rt.pipeline.drain()
        except StoreError as exc:
            log.error("stream %s: its last segment was not published: %s", key, exc)

    def remove_stream(self, key: str) -> None:
        """Forget a stopped stream: its URLs answer 404 from now on."""
        rt = self.streams.pop(key)
        for t in rt.tasks:
            t.cancel()

    def stream(self, app: str, name: str) -> StreamRuntime:
        if not (NAME_RE.match(app) and NAME_RE.match(name)):
            raise BadRequest("malformed stream name")
        rt = self.streams.get(f"{app}/{name}")
        if rt is None:
            raise NotFound(f"unknown stream {app}/{name}")
        return rt

    # -- the shared timeline -------------------------------------------------------------

    async def records(self, rt: StreamRuntime) -> tuple[list[SegmentRecord], dict[int, int]]:
        """The newest records and epoch starts, cached for 100 ms per stream."""
        now = time.monotonic()
        if rt._cache is not None and now - rt._cache[0] < 0.1:
            return rt._cache[1], rt._cache[2]
        limit = self.settings.window + 16
        records = await asyncio.to_thread(self.store.recent, rt.key, limit)
        # Epoch starts change only when a new epoch appears: ask again then (or every 10 s).
        firsts = rt._cache[2] if rt._cache is not None else None
        if (firsts is None or now - rt._firsts_at > 10
                or any(r.epoch not in firsts for r in records)):
            firsts = await asyncio.to_thread(self.store.epoch_first_numbers, rt.key)
            rt._firsts_at = now
        rt._cache = (now, records, firsts)
        return records, firsts

    async def epochs(self, rt: StreamRuntime, wanted: set[int]) -> dict[int, Epoch]:
        """Epoch records by index (an epoch never changes once stored: cached for good)."""
        if not wanted <= rt._epochs.keys():
            for e in await asyncio.to_thread(self.store.epochs, rt.key):
                rt._epochs[e.index] = e
        return rt._epochs

    async def _shown(self, rt: StreamRuntime) -> tuple[list[SegmentRecord], dict[int, int]]:
        records, firsts = await self.records(rt)
        return visible(records, self.clock.now(), self.settings.publish_delay_ticks), firsts

    def _playlist(self, shown: list[SegmentRecord], firsts: dict[int, int]
                  ) -> MediaPlaylist | None:
        return build_media_playlist(shown, firsts, window=self.settings.window,
                                    duration=self.settings.duration_ticks)

    async def media_playlist(self, rt: StreamRuntime) -> MediaPlaylist | None:
        """The MPEG-TS media playlist's model (segments with a TS part)."""
        shown, firsts = await self._shown(rt)
        return self._playlist([r for r in shown if r.part("ts")], firsts)

    async def window(self, rt: StreamRuntime) -> MediaPlaylist | None:
        """The window over every listed segment, whatever its outputs (readiness, backfill)."""
        shown, firsts = await self._shown(rt)
        return self._playlist(shown, firsts)

    async def cmaf_playlist(self, rt: StreamRuntime
                            ) -> tuple[MediaPlaylist, dict[int, Epoch], list[SegmentRecord]]:
        """The CMAF model shared by the fMP4 playlists and the MPD.

        A segment is listed only when it has every CMAF track of its epoch, so the video and
        audio playlists (and the MPD's adaptation sets) list the same numbers.
        """
        if "cmaf" not in rt.pipeline.cfg.outputs:
            raise CmafUnavailable(f"CMAF output is turned off for {rt.key}")
        shown, firsts = await self._shown(rt)
        epochs = await self.epochs(rt, {r.epoch for r in shown})
        listed = [r for r in shown if cmaf_parts(r, epochs.get(r.epoch))]
        pl = self._playlist(listed, firsts)
        if pl is None:
            latest = epochs[max(epochs)] if epochs else None
            reasons = [t.unsupported for t in latest.tracks if t.unsupported] if latest else []
            if reasons:
                raise CmafUnavailable(f"no CMAF output for {rt.key}: {'; '.join(reasons)}")
            raise NotFound(f"stream {rt.key} has no CMAF segments yet")
        return pl, epochs, listed

    @staticmethod
    def bandwidth(pl: MediaPlaylist, records: list[SegmentRecord], part: str
                  ) -> tuple[int, int]:
        """(peak, average) bits per second of ``part`` over the listed window."""
        by_number = {r.number: r for r in records}
        rates, total, span = [], 0, 0
        for e in pl.entries:
            r = by_number.get(e.number)
            p = r.part(part) if r is not None and not e.gap else None
            if p is None:
                continue
            rates.append(p.size * 8 * TICKS_PER_SECOND // max(e.duration, 1))
            total += p.size
            span += e.duration
        if not rates:
            return DEFAULT_BANDWIDTH, DEFAULT_BANDWIDTH
        return max(rates), total * 8 * TICKS_PER_SECOND // max(span, 1)

    async def variant(self, rt: StreamRuntime) -> Variant:
        pl = await self.media_playlist(rt)
        records, _ = await self.records(rt)
        bandwidth = self.bandwidth(pl, records, "ts")[0] if pl is not None else DEFAULT_BANDWIDTH
        epoch = await asyncio.to_thread(self.store.latest_epoch, rt.key)
        codecs = epoch.codecs if epoch else ""
        resolution = epoch.resolution if epoch else ""
        return Variant(f"{RENDITION}/{MEDIA_PLAYLIST}", bandwidth, codecs, resolution)

    async def presentation(self, rt: StreamRuntime) -> Presentation:
        pl, epochs, listed = await self.cmaf_playlist(rt)
        d = self.settings.duration_ticks
        delay = self.settings.publish_delay_ticks
        peaks = {k: self.bandwidth(pl, listed, k)[0] for k in CMAF_PARTS}
        newest = max(r.available_at for r in listed) + delay
        presentation = build_presentation(
            pl, epochs, (await self.records(rt))[1], duration=d,
            time_shift_buffer=self.settings.window * d, publish_time=newest,
            bandwidth=peaks, suggested_delay=self.settings.dash_delay_ticks,
            min_buffer_time=2 * d)
        if not presentation.periods:  # only holes in the window
            raise NotFound(f"stream {rt.key} lists no CMAF segment at the moment")
        return presentation

    # -- local files -------------------------------------------------------------------

    async def is_gap(self, rt: StreamRuntime, part: str, number: int) -> bool:
        """``number`` is a hole between published segments (listed as ``EXT-X-GAP``)."""
        if rt.files.get(part, number) is not None:
            return False
        records, _ = await self.records(rt)
        numbers = {r.number for r in records if r.part(part)}
        return (number not in numbers and bool(records) and records[0].number < number
                < records[-1].number)

    async def record(self, rt: StreamRuntime, number: int) -> SegmentRecord | None:
        records, _ = await self.records(rt)
        record = next((r for r in records if r.number == number), None)
        if record is None:
            found = await asyncio.to_thread(self.store.segments, rt.key, number)
            record = found[0] if found and found[0].number == number else None
        return record

    async def local_segment(self, rt: StreamRuntime, number: int, part: str = "ts", *,
                            from_peers: bool = True) -> LocalSegment:
        """The local file of ``part`` of segment ``number`` as the timeline lists it.

        Missing here but listed: fetch it from a peer that holds it (the bytes are checked
        against the timeline's hash, so they are the bytes we would have made); if no peer
        can give it, wait briefly for our own pipeline.
        """
        if part not in rt.files.dirs:
            raise NotFound(f"{part} output is turned off for {rt.key}")
        record = await self.record(rt, number)
        want = record.part(part) if record is not None else None
        seg = rt.files.get(part, number)
        if seg is not None and (want is None or want.sha256 == seg.sha256):
            return seg
        records, _ = await self.records(rt)
        newest = records[-1].number if records else None
        if record is None and (newest is None or number != newest + 1):
            raise NotFound(f"segment {number} of {rt.key} is not in the timeline")
        if record is not None and want is None:
            raise NotFound(f"segment {number} of {rt.key} has no {part} output")
        if record is not None and from_peers:
            data = await self.peers.fetch(record, self.clock.now(), part)
            if data is not None:
                assert want is not None
                return await asyncio.to_thread(rt.files.write, part, number, data, want.sha256)
        if seg is None:
            seg = await self._wait_local(rt, part, number)
            if seg is not None:
                record = await self.record(rt, number)
                want = record.part(part) if record is not None else None
                if want is None or want.sha256 == seg.sha256:
                    return seg
        raise NotFound(f"segment {number} of {rt.key} is not available on this node")

    async def local_init(self, rt: StreamRuntime, track: str, epoch_index: int, *,
                         from_peers: bool = True) -> LocalSegment:
        """An epoch's CMAF init segment for ``track``, exactly as the timeline lists it."""
        inits = rt.files.inits.get(track)
        if inits is None:
            raise CmafUnavailable(f"CMAF output is turned off for {rt.key}")
        epochs = await self.epochs(rt, {epoch_index})
        epoch = epochs.get(epoch_index)
        desc = epoch.track(track) if epoch is not None else None  # type: ignore[arg-type]
        if desc is None or desc.init is None:
            raise NotFound(f"epoch {epoch_index} of {rt.key} has no {track} init segment")
        seg = inits.get(epoch_index)
        if seg is not None and seg.sha256 == desc.init.sha256:
            return seg
        if from_peers:
            data = await self.peers.fetch_init(rt.key, epoch_index, desc.init, self.clock.now())
            if data is not None:
                return await asyncio.to_thread(inits.write, epoch_index, data, desc.init.sha256)
        raise NotFound(f"init segment {track}/{epoch_index} of {rt.key} is not available "
                       "on this node")

    async def _wait_local(self, rt: StreamRuntime, part: str, number: int
                          ) -> LocalSegment | None:
        deadline = time.monotonic() + self.settings.segment_wait
        cond = rt.pipeline.published
        while (seg := rt.files.get(part, number)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), min(remaining, 0.5))
        return seg

    # -- readiness and backfill ----------------------------------------------------------

    async def window_gaps(self, rt: StreamRuntime, *, fetch: bool
                          ) -> tuple[list[str], int | None]:
        """Listed files of the current window this node cannot serve as listed.

        Every output this node publishes counts (TS, CMAF media and init segments). A
        segment that was listed only moments ago and that our own pipeline is still working
        on is not counted (nor fetched). With ``fetch``, the others are fetched from peers.
        Returns the missing files (``"N.part"``, ``"init-E.track"``) and when the newest
        record was published.
        """
        records, _ = await self.records(rt)
        pl = await self.window(rt)
        if pl is None:
            return [], None
        by_number = {r.number: r for r in records}
        now = self.clock.now()
        grace = seconds_to_ticks(self.settings.segment_wait) + self.settings.publish_delay_ticks
        pipe = rt.pipeline
        files = rt.files
        missing: list[str] = []
        epochs_seen: set[int] = set()
        for e in pl.entries:
            record = by_number.get(e.number)
            if e.gap or record is None:
                continue
            epochs_seen.add(record.epoch)
            for part in record.parts:
                if part.name not in files.dirs:
                    continue
                seg = files.get(part.name, e.number)
                if seg is not None and seg.sha256 == part.sha256:
                    continue
                own_last = pipe.status.last_number
                coming = pipe.status.connected and (own_last is None or own_last < e.number)
                if seg is None and coming and now - record.available_at < grace:
                    continue
                if fetch:
                    data = await self.peers.fetch(record, now, part.name)
                    if data is not None:
                        await asyncio.to_thread(files.write, part.name, e.number, data,
                                                part.sha256)
                        continue
                missing.append(f"{e.number}.{part.name}")
        if files.inits and epochs_seen:
            epochs = await self.epochs(rt, epochs_seen)
            for index in sorted(epochs_seen):
                epoch = epochs.get(index)
                for t in epoch.tracks if epoch is not None else ():
                    inits = files.inits.get(t.kind)
                    if t.init is None or inits is None:
                        continue
                    seg = inits.get(index)
                    if seg is not None and seg.sha256 == t.init.sha256:
                        continue
                    if fetch:
                        data = await self.peers.fetch_init(rt.key, index, t.init, now)
                        if data is not None:
                            await asyncio.to_thread(inits.write, index, data, t.init.sha256)
                            continue
                    missing.append(f"init-{index}.{t.kind}")
        return missing, records[-1].available_at if records else None

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        now = self.clock.now()
        stale = max(10 * self.settings.duration_ticks, 60 * TICKS_PER_SECOND)
        streams: dict[str, object] = {}
        # A node with nothing to serve is not ready; a VOD-only node is, while its roots are.
        vod = {str(r.path): r.path.is_dir() for r in self.settings.vod_roots}
        ok = bool(self.streams or vod or self.discovering) and all(vod.values())
        for key, rt in self.streams.items():
            if rt.stopped_at is not None:  # stopped: served while it lasts, not required
                continue
            st = rt.pipeline.status
            missing, newest_at = await self.window_gaps(rt, fetch=False)
            if newest_at is None:
                reason = "no segment published yet"
            elif now - newest_at > stale:
                reason = f"no segment published for {(now - newest_at) // TICKS_PER_SECOND} s"
            elif missing:
                reason = f"cannot serve {len(missing)} file(s) of the window: {missing[:5]}"
            else:
                reason = ""
            streams[key] = {"ready": not reason, "reason": reason or None,
                            "connected": st.connected, "epoch": st.epoch,
                            "last_segment": st.last_number, "input_error": st.last_error}
            ok = ok and not reason
        body: dict[str, object] = {"ready": ok, "node": self.settings.node_id, "streams": streams}
        if vod:
            body["vod_roots"] = vod
        status = getattr(self.store, "status", None)
        if callable(status):
            body["store"] = status()
        return ok, body

    async def maintain(self, rt: StreamRuntime) -> None:
        """Keep the whole current window servable: backfill what we lack from peers."""
        rt.pipeline.metrics.publish_delay = self.settings.publish_delay_ticks / TICKS_PER_SECOND
        while True:
            try:
                pl = await self.window(rt)
                if pl is not None:  # disk stays bounded even when only backfill writes
                    await asyncio.to_thread(rt.files.prune,
                                            pl.media_sequence - self.settings.retain_extra)
                    oldest_epoch = min(e.epoch for e in pl.entries)
                    for inits in rt.files.inits.values():
                        await asyncio.to_thread(inits.prune, oldest_epoch)
                missing, _ = await self.window_gaps(rt, fetch=True)
                if missing != rt.missing:
                    if missing:
                        log.warning("stream %s: cannot get %s from any peer", rt.key,
                                    missing[:5])
                    rt.missing = missing
            except StoreError as exc:
                log.debug("backfill skipped: %s", exc)
            await asyncio.sleep(1.0)

    async def cluster(self) -> dict[str, object]:
        now = self.clock.now()
        nodes = await asyncio.to_thread(self.store.nodes)
        streams: dict[str, object] = {}
        for key in self.streams:
            newest = await asyncio.to_thread(self.store.newest_by_node, key)
            last = await asyncio.to_thread(self.store.last_number, key)
            streams[key] = {"newest_segment": last, "newest_by_node": newest}
        body: dict[str, object] = {
            "node": self.settings.node_id,
            "nodes": [{"node": n.node, "url": n.url,
                       "heartbeat_age_s": round((now - n.heartbeat) / TICKS_PER_SECOND, 3),
                       "stale": now - n.heartbeat > STALE_AFTER} for n in nodes],
            "streams": streams,
        }
        status = getattr(self.store, "status", None)
        if callable(status):
            body["store"] = status()
        return body
