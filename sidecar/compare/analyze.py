"""Judging listings and segments across origins (pure: no I/O, no clock).

* :func:`compare_listings`: two origins at one instant: identical, in step at the live edge
  (the same segments where both list them, windows one segment apart), or different, and in
  which fields.
* :class:`Tracker`: the hazards over the whole run: a sequence number mapped to two URIs or
  discontinuity numbers (hls.js >= 1.6 fails fatally on it; query strings are ignored, as
  hls.js does), and switching origins moving the live edge back.
* :func:`check_segment`: one segment name from every origin: served, same bytes, same ETag,
  same first video and audio timestamps.
* :class:`Comparison`: everything recorded in a run, and its :class:`Summary`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from itertools import combinations, permutations

from sidecar.compare.model import (
    BYTES_DIFFER,
    DIFFERENT,
    DRIFT,
    EDGE,
    EVENT_KINDS,
    IDENTICAL,
    MISSING,
    POLL_ERROR,
    SEQUENCE_BACKWARDS,
    SEQUENCE_CONFLICT,
    Entry,
    Event,
    Fetched,
    Instant,
    Listing,
    PairDiff,
    PairSummary,
    SegmentCheck,
    Summary,
)
from sidecar.compare.parse import strip_query

# Fields that may differ while two origins are in step: the window slid on one of them
# between the two answers (requests are simultaneous, not instantaneous).
EDGE_FIELDS = frozenset({"window", "media_sequence", "discontinuity_sequence", "publishTime"})
MEMORY_S = 60.0  # how long a sequence number's URI is remembered after it was last listed
DRIFT_EPS_MS = 0.001


def compare_listings(a: Listing, b: Listing, ia: int = 0, ib: int = 1) -> PairDiff:
    """Where two listings differ, and whether they are still in step (see module doc)."""
    fields: set[str] = {k for k in set(a.header) | set(b.header)
                        if a.header.get(k) != b.header.get(k)}
    ea = {(e.track, e.seq): e for e in a.entries}
    eb = {(e.track, e.seq): e for e in b.entries}
    for key in ea.keys() & eb.keys():
        fields |= _entry_fields(ea[key], eb[key])
    in_step = True
    for track in {k[0] for k in ea} | {k[0] for k in eb}:
        sa = sorted(s for t, s in ea if t == track)
        sb = sorted(s for t, s in eb if t == track)
        if sa == sb:
            continue
        fields.add("window")
        if not sa or not sb:
            in_step = False
            continue
        only = set(sa) ^ set(sb)
        newer = [s for s in only if s > min(sa[-1], sb[-1])]
        older = [s for s in only if s < max(sa[0], sb[0])]
        if len(newer) > 1 or len(older) > 1 or len(newer) + len(older) < len(only):
            in_step = False
    if not fields:
        return PairDiff(ia, ib, IDENTICAL)
    state = EDGE if in_step and fields <= EDGE_FIELDS else DIFFERENT
    return PairDiff(ia, ib, state, tuple(sorted(fields)))


def _entry_fields(x: Entry, y: Entry) -> set[str]:
    out: set[str] = set()
    if strip_query(x.uri) != strip_query(y.uri):
        out.add("uris")
    if abs(x.duration - y.duration) > 1e-6:
        out.add("durations")
    if x.pdt != y.pdt:
        out.add("program_date_times")
    if x.disc != y.disc:
        out.add("discontinuities")
    if x.gap != y.gap:
        out.add("gaps")
    if strip_query(x.init or "") != strip_query(y.init or ""):
        out.add("init")
    return out


class Tracker:
    """Hazards across origins and time; one event per conflict, one per backwards episode."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        # (track, seq) -> {(uri, disc): (origins, last seen)}
        self._seen: dict[tuple[str, int], dict[tuple[str, str], tuple[set[int], float]]] = {}
        self._conflicts: set[tuple[str, int]] = set()
        self._newest: list[dict[str, int]] = [{} for _ in labels]
        self._behind: set[tuple[int, int, str]] = set()

    def observe(self, t: float, listings: Sequence[Listing | None]) -> tuple[list[Event], bool]:
        """Record one instant; return its new events and whether any hazard is present."""
        self._forget(t)
        events: list[Event] = []
        active = False
        for i, listing in enumerate(listings):
            for e in listing.entries if listing is not None else ():
                if self._map(t, i, e):
                    active = True
                    key = (e.track, e.seq)
                    if key not in self._conflicts:
                        self._conflicts.add(key)
                        events.append(self._conflict_event(t, key))
        newest = [self._newest[i] if listing is None else _newest(listing)
                  for i, listing in enumerate(listings)]
        for i, j in permutations(range(len(listings)), 2):
            li = listings[i]
            if li is None or listings[j] is None:
                continue
            for track, top_j in newest[j].items():
                if track not in newest[i]:
                    continue
                ahead_now = sum(1 for e in li.entries if e.track == track and e.seq > top_j)
                before = self._newest[i].get(track)
                episode = (i, j, track)
                if ahead_now >= 2 or (before is not None and top_j < before):
                    active = True
                    if episode not in self._behind:
                        self._behind.add(episode)
                        lead = max(newest[i][track], before or newest[i][track])
                        events.append(Event(t, SEQUENCE_BACKWARDS, (i, j), (
                            f"{self.labels[j]} lists up to {_seq(track, top_j)}, "
                            f"{self.labels[i]} already listed {_seq(track, lead)}")))
                else:
                    self._behind.discard(episode)
        self._newest = newest
        return events, active

    def _map(self, t: float, origin: int, e: Entry) -> bool:
        seen = self._seen.setdefault((e.track, e.seq), {})
        value = (strip_query(e.uri), e.disc)
        origins, _ = seen.get(value, (set(), t))
        origins.add(origin)
        seen[value] = (origins, t)
        return len(seen) > 1

    def _conflict_event(self, t: float, key: tuple[str, int]) -> Event:
        values = self._seen[key]
        parts = [f"{uri} (discontinuity {disc}) on {', '.join(self.labels[o] for o in sorted(os))}"
                 for (uri, disc), (os, _) in sorted(values.items())]
        origins = tuple(sorted({o for os, _ in values.values() for o in os}))
        return Event(t, SEQUENCE_CONFLICT, origins, f"{_seq(*key)}: " + " vs ".join(parts))

    def _forget(self, t: float) -> None:
        for key in list(self._seen):
            values = self._seen[key]
            for value in [v for v, (_, last) in values.items() if t - last > MEMORY_S]:
                del values[value]
            if not values:
                del self._seen[key]
                self._conflicts.discard(key)


def _newest(listing: Listing) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in listing.entries:
        out[e.track] = max(out.get(e.track, e.seq), e.seq)
    return out


def _seq(track: str, seq: int) -> str:
    return f"{track} {seq}" if track else f"seq {seq}"


def offsets(values: Sequence[float | None],
            wrap: float | None = None) -> tuple[tuple[float | None, ...], float | None]:
    """Each value minus the first present one (modulo ``wrap``), and max minus min."""
    ref = next((v for v in values if v is not None), None)
    out: list[float | None] = []
    for v in values:
        if v is None or ref is None:
            out.append(None)
            continue
        d = v - ref
        if wrap:
            d = (d + wrap / 2) % wrap - wrap / 2
        out.append(round(d, 3))
    present = [o for o in out if o is not None]
    return tuple(out), (round(max(present) - min(present), 3) if len(present) >= 2 else None)


def check_segment(t: float, track: str, name: str, fetched: Sequence[Fetched],
                  labels: Sequence[str], *, init: bool = False, now: float | None = None,
                  start: float | None = None) -> tuple[SegmentCheck, list[Event]]:
    """Judge one segment name as served by every origin (``now``: when it was fetched)."""
    when = t if now is None else now
    events = [Event(when, MISSING, (i,), f"{name}: {f.error or f'HTTP {f.status}'} on "
                    f"{labels[i]}") for i, f in enumerate(fetched) if not f.ok]
    ok = [i for i, f in enumerate(fetched) if f.ok]
    bytes_equal = len({fetched[i].sha256 for i in ok}) == 1 if len(ok) >= 2 else None
    if bytes_equal is False:
        events.append(Event(when, BYTES_DIFFER, tuple(ok), f"{name}: " + ", ".join(
            f"{labels[i]} {(fetched[i].sha256 or '')[:12]} ({fetched[i].size} B)" for i in ok)))
    etags = [fetched[i].etag for i in ok]
    etag_equal = (len(set(etags)) == 1 if len(ok) >= 2 and None not in etags else None)
    timings = [fetched[i].timing if i in ok else None for i in range(len(fetched))]
    wrap = next((tm.wrap_ms for tm in timings if tm is not None and tm.wrap_ms), None)
    v_off, v_drift = offsets([tm.video_ms if tm else None for tm in timings], wrap)
    _, a_drift = offsets([tm.audio_ms if tm else None for tm in timings], wrap)
    frame = next((tm.frame_ms for tm in timings if tm is not None and tm.frame_ms), None)
    frames = round(v_drift / frame, 2) if v_drift is not None and frame else None
    drifted: list[str] = []
    if v_drift is not None and v_drift > DRIFT_EPS_MS:
        drifted.append(f"first video frame {v_drift:g} ms"
                       + (f" ({frames:g} frames)" if frames else ""))
    if a_drift is not None and a_drift > DRIFT_EPS_MS:
        drifted.append(f"first audio sample {a_drift:g} ms")
    if drifted:
        has = tuple(i for i, tm in enumerate(timings) if tm is not None)
        events.append(Event(when, DRIFT, has, f"{name}: " + ", ".join(drifted) + " apart"))
    check = SegmentCheck(round(t, 3), track, name, init, tuple(fetched), start, bytes_equal,
                         etag_equal, v_off, v_drift, frames, a_drift)
    return check, events


def agreement(points: Sequence[tuple[float, bool]], end: float) -> tuple[float | None, float]:
    """Time until the first divergence (None: never) and the longest stretch of agreement.

    ``points`` are ``(t, agrees)``: every instant, and every event (never agreeing). A
    stretch runs from the start (or the first agreeing instant after a divergence) to the
    next divergence (or the end of the run).
    """
    first: float | None = None
    longest = 0.0
    ordered = sorted(points)
    since: float | None = 0.0 if ordered and ordered[0][1] else None
    for t, ok in ordered:
        if not ok:
            first = t if first is None else first
            if since is not None:
                longest = max(longest, t - since)
            since = None
        elif since is None:
            since = t
    if since is not None:
        longest = max(longest, end - since)
    return first, round(longest, 3)


class Comparison:
    """Everything recorded in one run of ``sidecar compare``."""

    def __init__(self, urls: Sequence[str], labels: Sequence[str], kind: str,
                 media_urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.labels = list(labels)
        self.kind = kind
        self.media_urls = list(media_urls)
        self.instants: list[Instant] = []
        self.events: list[Event] = []
        self.checks: list[SegmentCheck] = []
        self.listed = 0  # distinct segment names seen
        self.skipped = 0  # names not downloaded (bandwidth budget, end of run)
        self.started_at: datetime | None = None
        self.tracker = Tracker(labels)
        self._failing: set[int] = set()

    def add_instant(self, t: float, results: Sequence[Listing | str]) -> Instant:
        """Record one poll: per origin a Listing or the reason it has none."""
        listings = [r if isinstance(r, Listing) else None for r in results]
        errors = {i: r for i, r in enumerate(results) if isinstance(r, str)}
        events: list[Event] = []
        for i, why in errors.items():
            if i not in self._failing:
                events.append(Event(t, POLL_ERROR, (i,), f"{self.labels[i]}: {why}"))
        self._failing = set(errors)
        hazards, active = self.tracker.observe(t, listings)
        events += hazards
        pairs = tuple(compare_listings(a, b, i, j)
                      for (i, a), (j, b) in combinations(enumerate(listings), 2)
                      if a is not None and b is not None)
        agree = not errors and not active and all(p.state != DIFFERENT for p in pairs)
        instant = Instant(round(t, 3), pairs, errors, agree)
        self.instants.append(instant)
        self.events += events
        return instant

    def add_check(self, check: SegmentCheck, events: Sequence[Event]) -> None:
        self.checks.append(check)
        self.events += events

    def summary(self, duration: float, interrupted: bool = False) -> Summary:
        """The run's figures, verdict and exit code."""
        pairs = [p for i in self.instants for p in i.pairs]
        n_pairs = len(pairs)
        states = {s: sum(1 for p in pairs if p.state == s) for s in (IDENTICAL, EDGE, DIFFERENT)}
        differences: dict[str, int] = {}
        for p in pairs:
            for f in p.fields:
                differences[f] = differences.get(f, 0) + 1
        compared = [c for c in self.checks if c.bytes_equal is not None]
        tagged = [c for c in self.checks if c.etag_equal is not None]
        timed = [c for c in self.checks if c.video_drift_ms is not None
                 or c.audio_drift_ms is not None]
        fetches = [f for c in self.checks for f in c.fetched]
        answered = sum(len(self.labels) - len(i.errors) for i in self.instants)
        shares = {
            "identical": _share(states[IDENTICAL], n_pairs),
            "in_step": _share(states[IDENTICAL] + states[EDGE], n_pairs),
            "answered": _share(answered, len(self.instants) * len(self.labels)),
            "served": _share(sum(f.ok for f in fetches), len(fetches)),
            "segments_identical": _share(sum(bool(c.bytes_equal) for c in compared),
                                         len(compared)),
            "etags_equal": _share(sum(bool(c.etag_equal) for c in tagged), len(tagged)),
            "no_drift": _share(sum(1 for c in timed if (c.video_drift_ms or 0) <= DRIFT_EPS_MS
                                   and (c.audio_drift_ms or 0) <= DRIFT_EPS_MS), len(timed)),
        }
        v = [c.video_drift_ms for c in self.checks if c.video_drift_ms is not None]
        vf = [c.video_drift_frames for c in self.checks if c.video_drift_frames is not None]
        a = [c.audio_drift_ms for c in self.checks if c.audio_drift_ms is not None]
        segments: dict[str, float | int | None] = {
            "listed": self.listed, "checked": len(self.checks), "compared": len(compared),
            "identical": sum(bool(c.bytes_equal) for c in compared), "skipped": self.skipped,
            "video_drift_ms_max": max(v, default=None),
            "video_drift_ms_median": _median(v),
            "video_drift_frames_max": max(vf, default=None),
            "audio_drift_ms_max": max(a, default=None),
            "audio_drift_ms_median": _median(a),
        }
        points = [(i.t, i.agree) for i in self.instants] + [(e.t, False) for e in self.events]
        first, longest = agreement(points, duration)
        hazards = {k: sum(1 for e in self.events if e.kind == k) for k in EVENT_KINDS}
        per_pair: list[PairSummary] = []
        for ia, ib in combinations(range(len(self.labels)), 2):
            mine = [p for p in pairs if (p.a, p.b) == (ia, ib)]
            fields: dict[str, int] = {}
            for p in mine:
                for f in p.fields:
                    fields[f] = fields.get(f, 0) + 1
            count = {s: sum(1 for p in mine if p.state == s) for s in (IDENTICAL, EDGE, DIFFERENT)}
            per_pair.append(PairSummary(ia, ib, len(mine), count[IDENTICAL], count[EDGE],
                                        count[DIFFERENT], fields))
        interchangeable = bool(self.instants) and not self.events and all(
            i.agree for i in self.instants)
        exit_code = 2 if not self.instants else (0 if interchangeable else 1)
        return Summary(len(self.instants), round(duration, 3), interrupted, shares, differences,
                       hazards, first, longest, segments, per_pair, interchangeable, exit_code)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
