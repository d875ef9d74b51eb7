"""Cut grid packets into numbered segments (chunking kept apart from muxing).

Rules, all pure functions of the packets' grid times, so every node cuts identically:

* Segment ``k`` starts at the first *driver* keyframe (video, or audio for audio-only
  streams) whose PTS lies in slot ``k``, i.e. the first keyframe with ``pts >= k*D``.
* A slot that the driver track crosses without a keyframe still gets exactly one segment:
  it starts at the first driver packet, in decode order, whose DTS lies in that slot
  ("soft" boundary; the segment is not independently decodable). A slot without any
  driver packet is left as a hole, which the playlist renders as ``EXT-X-GAP``.
* Other tracks (audio) are assigned by their own PTS to ``[start, next_start)``.
* A segment is emitted once its end is known and the audio has caught up with it (or the
  driver is ``max_interleave`` past it, or the epoch ends).
* Nothing is emitted for a slot that starts before ``publish_from`` (a late joiner's
  partial slot).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sidecar.grid import TICKS_PER_SECOND, slot_of
from sidecar.model import Cut, GridPacket

_PENDING_LIMIT = 10 * TICKS_PER_SECOND


@dataclass(slots=True)
class _Building:
    number: int
    start: int
    end: int | None
    driver: list[GridPacket] = field(default_factory=list)
    others: list[GridPacket] = field(default_factory=list)


@dataclass(slots=True)
class SegmenterStats:
    dropped_before_start: int = 0
    dropped_late: int = 0
    soft_boundaries: int = 0


class Segmenter:
    """Stateful, single-epoch chunker. Feed packets in arrival order; collect ``Cut``s."""

    def __init__(
        self,
        duration: int,
        *,
        publish_from: int,
        driver: str = "video",
        others: bool = False,
        max_interleave: int = 2 * TICKS_PER_SECOND,
    ) -> None:
        if duration <= 0:
            raise ValueError("segment duration must be positive")
        self.duration = duration
        self.publish_from = publish_from
        self.driver = driver
        self.max_interleave = max_interleave
        self.stats = SegmenterStats()
        self._open: _Building | None = None
        self._closing: list[_Building] = []
        self._pending: list[GridPacket] = []
        self._driver_mark: int | None = None
        self._other_mark: int | None = None
        self._has_others = others  # True: wait for the other tracks before emitting
        self._emitted_end: int | None = None

    # -- input -----------------------------------------------------------------------

    def push(self, p: GridPacket) -> list[Cut]:
        if p.kind == self.driver:
            self._push_driver(p)
        else:
            self._push_other(p)
        return self._drain(force=False)

    def finish(self) -> list[Cut]:
        """End of the epoch: close the open segment at the end of its media, emit all."""
        if self._open is not None:
            run = self._open
            ends = [q.end for q in run.driver] + [q.end for q in run.others]
            last_dts = max(q.dts for q in run.driver)
            self._split_run(until=max(ends), next_number=slot_of(last_dts, self.duration) + 1)
            self._open = None
        return self._drain(force=True)

    # -- driver track ----------------------------------------------------------------

    def _push_driver(self, p: GridPacket) -> None:
        self._driver_mark = p.dts if self._driver_mark is None else max(self._driver_mark, p.dts)
        slot = slot_of(p.pts, self.duration)
        if self._open is None:
            if p.keyframe and slot * self.duration >= self.publish_from and (
                self._emitted_end is None or p.pts >= self._emitted_end
            ):
                self._open = _Building(slot, p.pts, None, [p])
                keep = [q for q in self._pending if q.pts >= p.pts]
                self.stats.dropped_before_start += len(self._pending) - len(keep)
                self._open.others = keep
                self._pending = []
            else:
                self.stats.dropped_before_start += 1
            return
        if p.keyframe and slot > self._open.number:
            self._split_run(until=p.pts, next_number=slot)
            moved = [q for q in self._open.others if q.pts >= p.pts]
            self._open = _Building(slot, p.pts, None, [p], moved)
            return
        self._open.driver.append(p)

    def _split_run(self, until: int, next_number: int) -> None:
        """Close the open run at ``until``; slots it crossed without a keyframe get soft cuts."""
        run = self._open
        assert run is not None
        pieces = [_Building(run.number, run.start, None, [])]
        for q in run.driver:
            slot = slot_of(q.dts, self.duration)
            if pieces[-1].driver and pieces[-1].number < slot < next_number:
                self.stats.soft_boundaries += 1
                pieces.append(_Building(slot, max(q.pts, pieces[-1].start + 1), None, []))
            pieces[-1].driver.append(q)
        for a, b in itertools.pairwise(pieces):
            a.end = b.start
        pieces[-1].end = until
        for q in run.others:
            self._route(q, pieces)
        self._closing.extend(pieces)

    # -- other tracks ----------------------------------------------------------------

    def _push_other(self, p: GridPacket) -> None:
        self._has_others = True
        self._other_mark = p.pts if self._other_mark is None else max(self._other_mark, p.pts)
        if self._open is None and not self._closing:
            self._pending.append(p)
            newest = self._other_mark
            if self._pending[0].pts < newest - _PENDING_LIMIT:
                before = len(self._pending)
                self._pending = [q for q in self._pending if q.pts >= newest - _PENDING_LIMIT]
                self.stats.dropped_before_start += before - len(self._pending)
            return
        if self._open is not None and p.pts >= self._open.start:
            self._open.others.append(p)
            return
        if not self._route(p, self._closing):
            if self._emitted_end is None and (
                not self._closing or p.pts < self._closing[0].start
            ):
                self.stats.dropped_before_start += 1
            else:
                self.stats.dropped_late += 1

    def _route(self, p: GridPacket, pieces: list[_Building]) -> bool:
        for piece in pieces:
            assert piece.end is not None
            if piece.start <= p.pts < piece.end:
                piece.others.append(p)
                return True
        return False

    # -- output ----------------------------------------------------------------------

    def _ready(self, piece: _Building) -> bool:
        assert piece.end is not None
        if not self._has_others:
            return True
        if self._other_mark is not None and self._other_mark >= piece.end:
            return True
        mark = self._driver_mark
        return mark is not None and mark >= piece.end + self.max_interleave

    def _drain(self, force: bool) -> list[Cut]:
        out: list[Cut] = []
        while self._closing and (force or self._ready(self._closing[0])):
            piece = self._closing.pop(0)
            assert piece.end is not None
            self._emitted_end = piece.end
            packets = sorted(piece.driver + piece.others, key=lambda q: (q.dts, q.track))
            out.append(Cut(piece.number, piece.start, piece.end, tuple(packets)))
        return out
