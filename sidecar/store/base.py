"""The timeline store interface shared by the SQLite (single host) and Redis backends."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sidecar.errors import ConfigError
from sidecar.model import Epoch, Part, SegmentRecord, TrackDesc


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str
    url: str
    heartbeat: int


def parts_to_json(parts: tuple[Part, ...]) -> str:
    return json.dumps([[p.name, p.sha256, p.size] for p in parts], separators=(",", ":"))


def parts_from_json(text: str) -> tuple[Part, ...]:
    return tuple(Part(str(n), str(h), int(s)) for n, h, s in json.loads(text))


def tracks_to_json(tracks: tuple[TrackDesc, ...]) -> str:
    return json.dumps([asdict(t) for t in tracks], separators=(",", ":"))


def tracks_from_json(text: str) -> tuple[TrackDesc, ...]:
    return _tracks(json.loads(text))


def _tracks(items: list[dict[str, Any]]) -> tuple[TrackDesc, ...]:
    out = []
    for t in items:
        t = dict(t)
        init = t.pop("init", None)
        out.append(TrackDesc(**t, init=Part(**init) if init else None))
    return tuple(out)


def record_to_dict(r: SegmentRecord) -> dict[str, Any]:
    d = asdict(r)
    d["parts"] = [[p.name, p.sha256, p.size] for p in r.parts]
    return d


def record_from_dict(d: dict[str, Any]) -> SegmentRecord:
    d = dict(d)
    if "parts" in d:
        parts = tuple(Part(str(n), str(h), int(s)) for n, h, s in d.pop("parts"))
    else:  # written by 0.1 (TS only)
        parts = (Part("ts", d.pop("sha256"), int(d.pop("size"))),)
    return SegmentRecord(**d, parts=parts)


def epoch_to_dict(e: Epoch) -> dict[str, Any]:
    return asdict(e)


def epoch_from_dict(d: dict[str, Any]) -> Epoch:
    d = dict(d)
    tracks = _tracks(d.pop("tracks", []))
    return Epoch(**d, tracks=tracks)


class TimelineStore(Protocol):
    """Blocking calls; the pipeline runs them off the event loop.

    Writes are compare-and-set: ``create_epoch`` and ``put_segment`` return what is stored
    after the call, which is the caller's record only if it was the first writer.
    """

    def latest_epoch(self, stream: str) -> Epoch | None: ...

    def create_epoch(self, epoch: Epoch) -> Epoch: ...

    def epochs(self, stream: str) -> list[Epoch]: ...

    def put_segment(self, record: SegmentRecord) -> SegmentRecord: ...

    def segments(self, stream: str, since: int) -> list[SegmentRecord]:
        """Records with ``number >= since``, in number order."""
        ...

    def recent(self, stream: str, limit: int) -> list[SegmentRecord]:
        """The ``limit`` highest-numbered records, in number order."""
        ...

    def last_number(self, stream: str) -> int | None: ...

    def epoch_first_numbers(self, stream: str) -> dict[int, int]:
        """For every epoch that has segments, its lowest segment number."""
        ...

    def add_holder(self, stream: str, number: int, node: str) -> None: ...

    def holders(self, stream: str, number: int) -> list[str]: ...

    def newest_by_node(self, stream: str) -> dict[str, int]:
        """For every node that holds segments of ``stream``, the highest number it holds."""
        ...

    def heartbeat(self, node: str, url: str, now: int) -> None: ...

    def nodes(self) -> list[NodeInfo]: ...

    def close(self) -> None: ...


def open_store(spec: str | None, data_dir: Path) -> TimelineStore:
    """``None`` -> SQLite in the data directory; a path or ``sqlite:///path``; ``redis://...``."""
    from sidecar.store.sqlite import SqliteStore

    if not spec:
        return SqliteStore(data_dir / "timeline.sqlite3")
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from sidecar.store.mirrored import MirroredStore
        from sidecar.store.redis import RedisStore

        # Publishing must not stop when Redis does: a local mirror carries the node.
        return MirroredStore(RedisStore(spec), SqliteStore(data_dir / "timeline-mirror.sqlite3"))
    if spec.startswith("sqlite:///"):
        return SqliteStore(Path(spec.removeprefix("sqlite://")))
    if "://" in spec:
        raise ConfigError(f"unknown store {spec!r}: use a file path, sqlite:///path or redis://")
    return SqliteStore(Path(spec))
