"""The shared timeline as a playlist model: a pure function of store records and the clock.

Two nodes that read the same records at the same instant build the same model, so they
render the same playlist (invariant 3), whichever node started first.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sidecar.grid import ceil_seconds, round_seconds
from sidecar.model import SegmentRecord


@dataclass(frozen=True, slots=True)
class Entry:
    number: int
    start: int
    duration: int
    epoch: int
    gap: bool = False
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration: int
    media_sequence: int
    discontinuity_sequence: int
    entries: tuple[Entry, ...]
    ended: bool = False


def visible(records: Iterable[SegmentRecord], now: int, publish_delay: int) -> list[SegmentRecord]:
    """Records every node may list at ``now``: first published at least ``publish_delay`` ago.

    ``available_at`` is the first writer's clock, stored with the record, so the rule does
    not depend on when this node itself finished the segment.
    """
    return [r for r in records if r.available_at + publish_delay <= now]


def build_media_playlist(
    records: Sequence[SegmentRecord],
    epoch_first: dict[int, int],
    *,
    window: int,
    duration: int,
    ended: bool = False,
) -> MediaPlaylist | None:
    """The sliding window ending at the newest record; holes become gap entries.

    ``records`` are visible records in number order (at least the last ``window``
    numbers); ``epoch_first`` maps each epoch that has segments to its first number.
    """
    if not records:
        return None
    by_number = {r.number: r for r in records}
    last = records[-1].number
    stream_first = min(epoch_first.values(), default=records[0].number)
    first = max(last - window + 1, stream_first)
    # Epochs ordered by where they start: a segment's discontinuity number is the rank of
    # its epoch, which every node derives from the same records.
    starts = sorted((n, e) for e, n in epoch_first.items())
    start_numbers = [n for n, _ in starts]

    def epoch_at(n: int) -> tuple[int, int]:
        i = max(bisect_right(start_numbers, n) - 1, 0)
        return (starts[i][1], i) if starts else (records[0].epoch, 0)

    entries: list[Entry] = []
    prev_epoch: int | None = None
    for n in range(first, last + 1):
        r = by_number.get(n)
        if r is None:
            epoch = prev_epoch if prev_epoch is not None else epoch_at(n)[0]
            entries.append(Entry(n, n * duration, duration, epoch, gap=True))
        else:
            if prev_epoch is None:
                disc = epoch_first.get(r.epoch) == n and start_numbers and start_numbers[0] != n
            else:
                disc = r.epoch != prev_epoch
            entries.append(Entry(n, r.start, r.duration, r.epoch, discontinuity=bool(disc)))
            epoch = r.epoch
        prev_epoch = epoch
    head = entries[0]
    rank = epoch_at(head.number)[1]
    dsn = rank - (1 if head.discontinuity else 0)
    target = max([ceil_seconds(duration)] + [round_seconds(e.duration) for e in entries])
    return MediaPlaylist(target, first, max(dsn, 0), tuple(entries), ended)
