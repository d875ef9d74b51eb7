"""The shared timeline as a playlist model: a pure function of store records and the clock.

Two nodes that read the same records at the same instant build the same model, so they
render the same playlist (invariant 3), whichever node started first.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sidecar.grid import TICKS_PER_SECOND, ceil_seconds, round_seconds
from sidecar.model import Epoch, SegmentRecord, TrackDesc


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


@dataclass(frozen=True, slots=True)
class Period:
    """One epoch of a live DASH presentation (one DASH Period per epoch).

    ``start`` is the slot start of the epoch's first segment in ticks since the Unix epoch;
    with ``availabilityStartTime`` at 1970 it is both ``Period@start`` and, at the 90 kHz
    timescale, ``presentationTimeOffset``: media time equals grid time everywhere.
    """

    id: str
    start: int
    epoch: int
    tracks: tuple[TrackDesc, ...]
    segments: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Presentation:
    """A dynamic MPD's content: a pure function of the timeline and the listing instant."""

    periods: tuple[Period, ...]
    publish_time: int
    segment_duration: int
    time_shift_buffer: int
    suggested_delay: int
    min_buffer_time: int
    # (track kind, bits per second): the largest segment rate in the window.
    bandwidth: tuple[tuple[str, int], ...]


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


def short_tail_limit(duration: int) -> int:
    """Ticks below which a Period's last segment is left out of the DASH timeline.

    An epoch that ends just after a slot boundary (the encoder stopped) leaves a last
    segment of a fraction of a second. Two clients cannot play one at the end of a Period:

    * dash.js (5.2) stalls at the end of the previous segment (the tail is published only
      when the next epoch starts), then gets a few tenths of a second more; Chromium does
      not resume on that little data, and dash.js's gap jump only acts when less than
      ``streaming.gaps.threshold`` (0.3 s) is buffered ahead: stuck for good.
    * FFmpeg's dashdec (5.1) maps its position through whole seconds on every manifest
      refresh (``refresh_manifest``: start time / timescale, then the first segment
      starting at or after that second): a segment shorter than a second that does not
      cross a second boundary maps back onto itself and is read again and again.

    Leaving it out keeps every listed time exact: the Period's media ends where the
    previous segment ends (the next Period starts later anyway). The tail stays in the
    HLS playlists. At most one second, and never half a slot or more.
    """
    return min(TICKS_PER_SECOND, duration // 2)


def build_presentation(
    pl: MediaPlaylist,
    epochs: dict[int, Epoch],
    epoch_first: dict[int, int],
    *,
    duration: int,
    time_shift_buffer: int,
    publish_time: int,
    bandwidth: dict[str, int],
    suggested_delay: int,
    min_buffer_time: int,
    min_tail: int | None = None,
) -> Presentation:
    """The DASH view of a CMAF media playlist: its listed segments grouped by epoch.

    Gap entries are left out (a hole in a ``SegmentTimeline`` with ``$Time$`` addressing
    needs no filler); each epoch becomes a Period whose identity and start never change
    while any of its segments is listed. A Period's last segment shorter than
    ``min_tail`` ticks (default :func:`short_tail_limit`) is left out of it: see there.
    """
    limit = short_tail_limit(duration) if min_tail is None else min_tail
    periods: list[Period] = []
    group: list[Entry] = []

    def close() -> None:
        if group and group[-1].duration < limit:
            group.pop()
        if not group:
            return
        epoch = group[0].epoch
        first = epoch_first.get(epoch, group[0].number)
        e = epochs.get(epoch)
        tracks = tuple(t for t in e.tracks if t.init is not None) if e is not None else ()
        periods.append(Period(f"e{epoch}", first * duration, epoch, tracks, tuple(group)))
        group.clear()

    for entry in pl.entries:
        if entry.gap:
            continue
        if group and entry.epoch != group[0].epoch:
            close()
        group.append(entry)
    close()
    return Presentation(tuple(periods), publish_time, duration, time_shift_buffer,
                        suggested_delay, min_buffer_time, tuple(sorted(bandwidth.items())))
