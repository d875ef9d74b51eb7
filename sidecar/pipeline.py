"""One stream's live pipeline: ingest -> clock -> segmenter -> mux -> store/timeline.

The reader thread does the blocking demux; this coroutine places packets on the grid,
cuts and muxes segments (muxing in a worker thread) and publishes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

from sidecar.clock import Clock, InputTimeline, Placed, matches, propose_epoch
from sidecar.errors import StoreError
from sidecar.grid import TICKS_PER_SECOND, rescale
from sidecar.ingest import END, Reader, Source
from sidecar.metrics import StreamMetrics
from sidecar.model import (
    Cut,
    Epoch,
    GridPacket,
    InputClosed,
    InputOpened,
    Part,
    RawPacket,
    SegmentRecord,
    TrackDesc,
    TrackInfo,
)
from sidecar.mux import fmp4
from sidecar.mux.ts import MuxError, mux_ts
from sidecar.segmenter import Segmenter
from sidecar.storage import StreamFiles
from sidecar.store import TimelineStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    stream: str
    node: str
    duration: int
    tolerance: int = 2 * TICKS_PER_SECOND
    join_margin: int = TICKS_PER_SECOND
    # How long (wall clock) to watch a new run's packets before deciding its epoch.
    settle: int = TICKS_PER_SECOND // 2
    # An input away this long has ended its epoch: its open segment is published as is.
    epoch_end_timeout: int = 12 * TICKS_PER_SECOND
    keep_segments: int = 16
    # Output families: "ts" (MPEG-TS HLS), "cmaf" (fMP4 HLS and DASH).
    outputs: tuple[str, ...] = ("ts", "cmaf")


@dataclass
class _Run:
    """What is open on the current (or last) connection."""

    tracks: tuple[TrackInfo, ...]
    timeline: InputTimeline
    opened: InputOpened
    segmenter: Segmenter | None = None
    epoch: Epoch | None = None
    # The CMAF tracks muxed in this epoch (empty: no CMAF output), with their init bytes.
    cmaf: tuple[TrackInfo, ...] = ()
    # Packets held while the epoch is being recognised (see ``_settled``).
    pending: list[tuple[RawPacket, Placed]] = field(default_factory=list)


@dataclass
class StreamStatus:
    connected: bool = False
    epoch: int | None = None
    last_publish: int | None = None
    last_number: int | None = None
    published: int = 0
    divergent: int = 0
    mux_errors: int = 0
    last_error: str | None = None
    cmaf_error: str | None = None


class StreamPipeline:
    def __init__(self, cfg: PipelineConfig, source: Source, store: TimelineStore,
                 files: StreamFiles, clock: Clock) -> None:
        self.cfg = cfg
        self.source = source
        self.store = store
        self.files = files
        self.clock = clock
        self.status = StreamStatus()
        self.metrics = StreamMetrics(cfg.stream)
        self.published = asyncio.Condition()
        self._run: _Run | None = None
        self._suspended: _Run | None = None
        self._suspended_at: int | None = None
        self._max_cut: int | None = None
        self._reader: Reader | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._reader = Reader(self.cfg.stream, self.source, loop, queue, metrics=self.metrics)
        self._reader.start()
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that lands as the get() completes (CPython gh-86296),
                    # and the pipeline would outlive shutdown.
                    async with asyncio.timeout(1.0):
                        item = await queue.get()
                except TimeoutError:
                    await self.tick()
                    continue
                if item is END:
                    return
                try:
                    await self.handle(item)
                except StoreError as exc:
                    # The packet is lost for this node (peers can still serve its segment);
                    # the next packet retries.
                    self.status.last_error = f"timeline store: {exc}"
                    log.error("stream %s: %s", self.cfg.stream, exc)
        finally:
            self._reader.stop_event.set()
            await asyncio.to_thread(self._reader.stop)

    async def drain(self) -> None:
        """After ``run`` ended (the stream was stopped): publish what was open."""
        if self._run is not None and self._run.segmenter is not None:
            self._suspended, self._run = self._run, None
        await self._flush_suspended()

    async def tick(self) -> None:
        """Called when the input is quiet: an epoch whose input stayed away ends here."""
        if (self._suspended is not None and self._suspended_at is not None
                and self.clock.now() - self._suspended_at >= self.cfg.epoch_end_timeout):
            log.info("stream %s: input gone for %d s, publishing the epoch's last segment",
                     self.cfg.stream, self.cfg.epoch_end_timeout // TICKS_PER_SECOND)
            await self._flush_suspended()

    async def handle(self, item: object) -> None:
        """Process one reader event (also the entry point for in-process simulations)."""
        if isinstance(item, RawPacket):
            await self._on_packet(item)
        elif isinstance(item, InputOpened):
            self._on_opened(item)
        elif isinstance(item, InputClosed):
            self._on_closed(item)

    # -- events ----------------------------------------------------------------------

    def _on_opened(self, opened: InputOpened) -> None:
        if self._run is not None and self._run.segmenter is not None:
            self._suspended, self._suspended_at = self._run, self.clock.now()
        self._run = _Run(opened.tracks, InputTimeline(opened.wrap_bits), opened)
        self.status.connected = True

    def _on_closed(self, closed: InputClosed) -> None:
        # The open segment may be incomplete on this node only (a network hiccup) or be
        # the true end of the epoch (encoder gone): decided when the next epoch is known.
        self.status.connected = False
        if closed.error:
            self.status.last_error = closed.reason
        if self._run is not None and self._run.segmenter is not None:
            self._suspended, self._suspended_at = self._run, self.clock.now()
        self._run = None

    async def _on_packet(self, raw: RawPacket) -> None:
        run = self._run
        if run is None:
            return
        placed = run.timeline.place(raw)
        if placed.jump:
            if run.pending:  # a jump while still recognising: settle what we have first
                await self._settle(run)
            if run.segmenter is not None:
                log.info("stream %s: timestamp jump, closing epoch %s", self.cfg.stream,
                         run.epoch.index if run.epoch else "?")
                await self._publish_cuts(run, run.segmenter.finish())
            run.segmenter = None
            run.epoch = None
        if run.epoch is None:
            run.pending.append((raw, placed))
            if self._settled(run):
                await self._settle(run)
            return
        await self._push(run, raw, placed)

    def _settled(self, run: _Run) -> bool:
        first, last = run.pending[0][0], run.pending[-1][0]
        return last.arrival - first.arrival >= self.cfg.settle or len(run.pending) > 5000

    async def _settle(self, run: _Run) -> None:
        """Decide the epoch of the held packets, then feed them through.

        Packets read while the input was being opened arrive in one burst, late against
        their timestamps; the freshest packet in the burst shows the true delivery delay,
        so the run's arrival is estimated from the smallest ``arrival - timestamp``.
        """
        t0 = run.pending[0][1].dts
        offset = min(r.arrival - p.dts for r, p in run.pending)
        await self._enter_epoch(run, t0, t0 + offset)
        pending, run.pending = run.pending, []
        for raw, placed in pending:
            await self._push(run, raw, placed)

    async def _push(self, run: _Run, raw: RawPacket, placed: Placed) -> None:
        assert run.epoch is not None and run.segmenter is not None
        track = run.tracks[raw.track]
        anchor = run.epoch.anchor
        gp = GridPacket(raw.track, track.kind, anchor + placed.pts, anchor + placed.dts,
                        rescale(raw.duration, raw.time_base), raw.keyframe, raw.data)
        self.metrics.packet(raw.arrival, gp.dts)
        stats = run.segmenter.stats
        early, late = stats.dropped_before_start, stats.dropped_late
        cuts = run.segmenter.push(gp)
        self.metrics.dropped(stats, early, late)
        if cuts:
            await self._publish_cuts(run, cuts, completed_at=raw.arrival)

    # -- epochs ----------------------------------------------------------------------

    def _codecs(self, run: _Run) -> tuple[str, str]:
        codecs = ",".join(t.codec_string for t in run.tracks)
        video = next((t for t in run.tracks if t.kind == "video"), None)
        return codecs, f"{video.width}x{video.height}" if video else ""

    def _describe(self, run: _Run) -> tuple[tuple[TrackDesc, ...], dict[str, bytes]]:
        """Track descriptions for a new epoch, with CMAF init segments when CMAF is on.

        Blocking (muxes the inits): runs in a worker thread. A codec CMAF cannot carry
        turns CMAF off for the whole epoch; the TS output is not affected.
        """
        first: dict[str, bytes] = {}
        for raw, _ in run.pending:  # decoder configuration when the codec has none
            kind = run.tracks[raw.track].kind
            if kind not in first and (raw.keyframe or kind == "audio"):
                first[kind] = raw.data
        want = "cmaf" in self.cfg.outputs
        reasons = [r for t in run.tracks if (r := fmp4.unsupported_reason(t))] if want else []
        inits: dict[str, bytes] = {}
        descs = []
        for t in run.tracks:
            init: Part | None = None
            codec = t.codec_string
            if want and not reasons:
                try:
                    data = fmp4.init_segment(t, first_keyframe=first.get(t.kind))
                    codec = fmp4.codec_string(t, first_keyframe=first.get(t.kind))
                except MuxError as exc:
                    reasons.append(str(exc))
                else:
                    inits[t.kind] = data
                    init = Part(t.kind, hashlib.sha256(data).hexdigest(), len(data))
            descs.append(TrackDesc(t.kind, codec, t.width, t.height, t.frame_rate,
                                   t.sample_rate, t.channels, init,
                                   fmp4.unsupported_reason(t) or ""))
        if reasons:  # all CMAF tracks of an epoch, or none
            inits = {}
            descs = [TrackDesc(d.kind, d.codec, d.width, d.height, d.frame_rate,
                               d.sample_rate, d.channels, None, d.unsupported) for d in descs]
        self.status.cmaf_error = "; ".join(reasons) or None
        return tuple(descs), inits

    def _adopt_inits(self, run: _Run, epoch: Epoch, inits: dict[str, bytes]) -> None:
        """Decide this run's CMAF tracks from the epoch; keep our inits where they match.

        The epoch's creator decided whether the epoch has CMAF output (its track
        descriptions carry the init hashes); we mux CMAF media exactly when it does. An init
        of ours that differs (or that we could not make) is not served: backfill fetches
        the timeline's from a peer.
        """
        run.cmaf = ()
        if "cmaf" not in self.cfg.outputs:
            return
        ours = []
        for t in run.tracks:
            desc = epoch.track(t.kind)
            if desc is None or desc.init is None:
                return
            data = inits.get(t.kind)
            sha = hashlib.sha256(data).hexdigest() if data is not None else None
            if data is not None and sha == desc.init.sha256:
                self.files.inits[t.kind].write(epoch.index, data, sha)
            else:
                log.warning("stream %s: our %s init for epoch %d is not the timeline's; "
                            "it will come from a peer", self.cfg.stream, t.kind, epoch.index)
            ours.append(t)
        run.cmaf = tuple(ours)

    async def _enter_epoch(self, run: _Run, t: int, arrival: int) -> None:
        codecs, resolution = self._codecs(run)
        descs, inits = await asyncio.to_thread(self._describe, run)
        if self.status.cmaf_error:
            log.warning("stream %s: no CMAF output for this epoch: %s", self.cfg.stream,
                        self.status.cmaf_error)
        latest = await asyncio.to_thread(self.store.latest_epoch, self.cfg.stream)
        epoch: Epoch | None = None
        for _ in range(3):
            if latest is not None and latest.codecs == codecs and matches(
                latest, t, arrival, self.cfg.tolerance
            ):
                epoch = latest
                break
            await self._flush_suspended()  # a new epoch begins: the old one has ended
            stored_last = await asyncio.to_thread(self.store.last_number, self.cfg.stream)
            last = max((n for n in (stored_last, self._max_cut) if n is not None), default=None)
            proposal = propose_epoch(self.cfg.stream, latest, t, arrival,
                                     duration=self.cfg.duration, last_number=last,
                                     node=self.cfg.node, codecs=codecs, resolution=resolution,
                                     tracks=descs)
            stored = await asyncio.to_thread(self.store.create_epoch, proposal)
            if stored == proposal:
                epoch = stored
                log.info("stream %s: new epoch %d (anchor %d, first slot %d)", self.cfg.stream,
                         stored.index, stored.anchor, stored.grid(t) // self.cfg.duration)
                break
            latest = stored  # another node won the race: adopt it if it fits
        if epoch is None:
            raise RuntimeError(f"stream {self.cfg.stream}: no epoch agreement after 3 tries")
        sus = self._suspended
        if sus is not None and sus.epoch is not None and sus.epoch.index < epoch.index:
            await self._flush_suspended()
        # Reconnected into the same epoch: what was open then missed packets; drop it.
        self._suspended = None
        saw_start = t <= epoch.t0
        publish_from = epoch.grid(epoch.t0) if saw_start else epoch.grid(t) + self.cfg.join_margin
        driver = "video" if any(tr.kind == "video" for tr in run.tracks) else "audio"
        await asyncio.to_thread(self._adopt_inits, run, epoch, inits)
        # Adopted epochs are ``latest`` (matched); one we created is our stored proposal.
        self.metrics.epoch(epoch is not latest, self.status.epoch, epoch.index)
        run.epoch = epoch
        run.segmenter = Segmenter(self.cfg.duration, publish_from=publish_from, driver=driver,
                                  others=len(run.tracks) > 1)
        self.status.epoch = epoch.index

    async def _flush_suspended(self) -> None:
        """Publish what was open when the input dropped: it was the end of its epoch."""
        sus, self._suspended = self._suspended, None
        if sus is not None and sus.segmenter is not None and sus.epoch is not None:
            await self._publish_cuts(sus, sus.segmenter.finish())
            sus.segmenter = None

    # -- publishing ------------------------------------------------------------------

    async def _publish_cuts(self, run: _Run, cuts: list[Cut], *,
                            completed_at: int | None = None) -> None:
        assert run.epoch is not None
        for cut in cuts:
            await self.publish(run.tracks, run.epoch, cut, run.cmaf, completed_at=completed_at)

    def _mux(self, tracks: tuple[TrackInfo, ...], cmaf: tuple[TrackInfo, ...],
             cut: Cut) -> tuple[dict[str, bytes], tuple[Part, ...]]:
        """Every output of one cut and its hashes (blocking: runs in a worker thread)."""
        out: dict[str, bytes] = {}
        if "ts" in self.cfg.outputs:
            try:
                out["ts"] = mux_ts(tracks, cut.packets)
            except MuxError as exc:
                self.status.mux_errors += 1
                log.error("stream %s: TS segment %d not published: %s", self.cfg.stream,
                          cut.number, exc)
        for t in cmaf:
            packets = [p for p in cut.packets if p.track == t.index]
            if not packets:
                continue  # e.g. no audio in this slot: the CMAF segment is not listed
            try:
                out[t.kind] = fmp4.media_segment(t, packets, number=cut.number,
                                                 start=cut.start, end=cut.end)
            except MuxError as exc:
                self.status.mux_errors += 1
                log.error("stream %s: CMAF %s segment %d not published: %s",
                          self.cfg.stream, t.kind, cut.number, exc)
        parts = tuple(Part(name, hashlib.sha256(blob).hexdigest(), len(blob))
                      for name, blob in sorted(out.items()))
        return out, parts

    def _keep(self, number: int, data: dict[str, bytes], ours: tuple[Part, ...],
              stored: SegmentRecord) -> bool:
        """Write our parts whose bytes are the timeline's; True if none differs.

        A part the timeline does not list (its first writer did not publish that output)
        is not kept: nothing unlisted is ever served.
        """
        same = True
        hashes = {p.name: p.sha256 for p in ours}
        for part in stored.parts:
            blob = data.get(part.name)
            if blob is None:
                continue
            if hashes[part.name] == part.sha256:
                self.files.write(part.name, number, blob, part.sha256)
            else:
                same = False
        return same

    async def publish(self, tracks: tuple[TrackInfo, ...], epoch: Epoch, cut: Cut,
                      cmaf: tuple[TrackInfo, ...] = (), *,
                      completed_at: int | None = None) -> None:
        """Mux, record and keep one cut (``completed_at``: when the packet that completed
        it arrived, for the listing latency)."""
        stream = self.cfg.stream
        self._max_cut = cut.number if self._max_cut is None else max(self._max_cut, cut.number)
        data, parts = await asyncio.to_thread(self._mux, tracks, cmaf, cut)
        if not data:
            log.error("stream %s: segment %d not published: no output could be muxed", stream,
                      cut.number)
            return
        record = SegmentRecord(stream, cut.number, epoch.index, cut.start, cut.duration, parts,
                               self.clock.now(), self.cfg.node)
        stored = await asyncio.to_thread(self.store.put_segment, record)
        same = await asyncio.to_thread(self._keep, cut.number, data, parts, stored)
        if same:
            await asyncio.to_thread(self.store.add_holder, stream, cut.number, self.cfg.node)
        else:
            # Never keep bytes the timeline does not list: backfill fetches its version.
            self.status.divergent += 1
            log.warning("stream %s: segment %d differs from the timeline's (node %s): "
                        "ours %s, theirs %s", stream, cut.number, stored.node,
                        _short(parts), _short(stored.parts))
        self.status.last_publish = self.clock.now()
        self.status.last_number = cut.number
        self.status.published += 1
        self.metrics.published(parts, stored, same, completed_at)
        await asyncio.to_thread(self.files.prune, cut.number - self.cfg.keep_segments)
        async with self.published:
            self.published.notify_all()


def _short(parts: tuple[Part, ...]) -> str:
    return " ".join(f"{p.name}:{p.sha256[:12]}" for p in parts)
