"""From captured segments to the figures: match segments across nodes, compare them.

Matching is the same rule for every packager: two nodes' segments are "the same segment"
when each is the other's nearest by start (first video frame on the encoder timeline) and
they start less than half a segment duration apart; matches are joined across nodes. A
match with members on two or more nodes is one shared segment. Over shared segments:

* ``identical_names``    all members have the same URI,
* ``identical_sequence`` all members were listed under the same media sequence number,
* ``identical_bytes``    all members have the same SHA-256,
* drift                  latest minus earliest start in the match (ms, and frames).

Matching by start rather than by name lets one rule serve packagers that name by time
(sidecar, nginx ``timestamp``) and by counter (FFmpeg). The opposite failure, one name for
different media, is counted separately as ``name_collisions``: URIs that, on any nodes and
at any time, pointed at media with different starts.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from benchmarks.drift.collect import Seg


@dataclass
class Figures:
    segments: int = 0
    identical_names: float | None = None
    identical_sequence: float | None = None
    identical_bytes: float | None = None
    drift_ms_max: float | None = None
    drift_ms_median: float | None = None
    drift_frames_max: float | None = None
    drift_frames_median: float | None = None
    name_collisions: int = 0
    unidentified: int = 0
    # per node: [(time of the match's earliest start, s), node's offset from it, ms)]
    boundaries: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _find(parent: dict[int, int], i: int) -> int:
    for _ in range(100_000):
        if parent[i] == i:
            return i
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def match(segs: list[Seg], tolerance_ms: float) -> list[list[Seg]]:
    """Groups of segments from different nodes that cover the same media (see module doc)."""
    by_node: dict[str, list[Seg]] = defaultdict(list)
    for s in segs:
        if s.start_ms is not None:
            by_node[s.node].append(s)
    for lst in by_node.values():
        lst.sort(key=lambda s: s.start_ms or 0.0)
    flat = [s for lst in by_node.values() for s in lst]
    index = {id(s): i for i, s in enumerate(flat)}
    parent = {i: i for i in range(len(flat))}

    def nearest(s: Seg, lst: list[Seg]) -> Seg | None:
        best = min(lst, key=lambda o: abs((o.start_ms or 0.0) - (s.start_ms or 0.0)),
                   default=None)
        if best is None or abs((best.start_ms or 0.0) - (s.start_ms or 0.0)) >= tolerance_ms:
            return None
        return best

    nodes = sorted(by_node)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            for s in by_node[a]:
                t = nearest(s, by_node[b])
                if t is not None and nearest(t, by_node[a]) is s:
                    ra, rb = _find(parent, index[id(s)]), _find(parent, index[id(t)])
                    parent[ra] = rb
    groups: dict[int, list[Seg]] = defaultdict(list)
    for i, s in enumerate(flat):
        groups[_find(parent, i)].append(s)
    out: list[list[Seg]] = []
    for members in groups.values():
        # at most one segment per node: keep the one closest to the group's median start
        med = statistics.median(m.start_ms or 0.0 for m in members)
        per: dict[str, Seg] = {}
        for m in sorted(members, key=lambda m: abs((m.start_ms or 0.0) - med)):
            per.setdefault(m.node, m)
        out.append(sorted(per.values(), key=lambda m: m.node))
    out.sort(key=lambda g: min(m.start_ms or 0.0 for m in g))
    return out


def figures(segs: list[Seg], segment_ms: float, frame_ms: float) -> Figures:
    f = Figures()
    f.unidentified = sum(1 for s in segs if s.start_ms is None)
    groups = [g for g in match(segs, segment_ms / 2) if len(g) >= 2]
    f.segments = len(groups)
    drifts: list[float] = []
    names = seqs = same = 0
    for g in groups:
        starts = [m.start_ms or 0.0 for m in g]
        first = min(starts)
        drifts.append(max(starts) - first)
        names += len({m.uri for m in g}) == 1
        seqs += len({m.seq for m in g}) == 1
        same += len({m.sha256 for m in g}) == 1
        for m in g:
            f.boundaries.setdefault(m.node, []).append(
                (round(first / 1000, 3), round((m.start_ms or 0.0) - first, 1)))
    if groups:
        n = len(groups)
        f.identical_names = round(names / n, 4)
        f.identical_sequence = round(seqs / n, 4)
        f.identical_bytes = round(same / n, 4)
        f.drift_ms_max = round(max(drifts), 1)
        f.drift_ms_median = round(statistics.median(drifts), 1)
        f.drift_frames_max = round(max(drifts) / frame_ms, 2)
        f.drift_frames_median = round(statistics.median(drifts) / frame_ms, 2)
    # one URI, different media (on two nodes, or on one node over time)
    starts_by_uri: dict[str, list[float]] = defaultdict(list)
    for s in segs:
        if s.start_ms is not None:
            starts_by_uri[s.uri].append(s.start_ms)
    for starts in starts_by_uri.values():
        if max(starts) - min(starts) > frame_ms / 2:
            f.name_collisions += 1
    return f
