"""SQLite timeline store: the embedded default, shared by nodes on one host via one file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sidecar.errors import StoreError
from sidecar.model import Epoch, SegmentRecord
from sidecar.store.base import (
    NodeInfo,
    parts_from_json,
    parts_to_json,
    tracks_from_json,
    tracks_to_json,
)

SCHEMA_VERSION = 2
KEEP = 20_000  # records kept per stream (as the Redis backend does)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    stream TEXT NOT NULL, idx INTEGER NOT NULL, anchor INTEGER NOT NULL, t0 INTEGER NOT NULL,
    lead INTEGER NOT NULL, created_at INTEGER NOT NULL, node TEXT NOT NULL,
    codecs TEXT NOT NULL, resolution TEXT NOT NULL, tracks TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (stream, idx));
CREATE TABLE IF NOT EXISTS segments (
    stream TEXT NOT NULL, number INTEGER NOT NULL, epoch INTEGER NOT NULL,
    start INTEGER NOT NULL, duration INTEGER NOT NULL, parts TEXT NOT NULL,
    available_at INTEGER NOT NULL, node TEXT NOT NULL,
    PRIMARY KEY (stream, number));
CREATE TABLE IF NOT EXISTS holders (
    stream TEXT NOT NULL, number INTEGER NOT NULL, node TEXT NOT NULL,
    PRIMARY KEY (stream, number, node));
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, url TEXT NOT NULL,
    heartbeat INTEGER NOT NULL);
"""


# Schema 1 (0.1): TS only, one hash per segment, no track descriptions.
_MIGRATE_1 = """
ALTER TABLE epochs ADD COLUMN tracks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE segments RENAME TO segments_v1;
CREATE TABLE segments (
    stream TEXT NOT NULL, number INTEGER NOT NULL, epoch INTEGER NOT NULL,
    start INTEGER NOT NULL, duration INTEGER NOT NULL, parts TEXT NOT NULL,
    available_at INTEGER NOT NULL, node TEXT NOT NULL,
    PRIMARY KEY (stream, number));
INSERT INTO segments SELECT stream, number, epoch, start, duration,
    json_array(json_array('ts', sha256, size)), available_at, node FROM segments_v1;
DROP TABLE segments_v1;
UPDATE meta SET value='2' WHERE key='schema';
"""


def _epoch(row: tuple) -> Epoch:
    return Epoch(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                 tracks_from_json(row[9]))


def _epoch_row(e: Epoch) -> tuple:
    return (e.stream, e.index, e.anchor, e.t0, e.lead, e.created_at, e.node, e.codecs,
            e.resolution, tracks_to_json(e.tracks))


def _segment(row: tuple) -> SegmentRecord:
    return SegmentRecord(row[0], row[1], row[2], row[3], row[4], parts_from_json(row[5]),
                         row[6], row[7])


def _segment_row(r: SegmentRecord) -> tuple:
    return (r.stream, r.number, r.epoch, r.start, r.duration, parts_to_json(r.parts),
            r.available_at, r.node)


class SqliteStore:
    """Compare-and-set through primary keys: ``INSERT OR IGNORE`` then read back the winner."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            fresh = not self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            if fresh:
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                 (str(SCHEMA_VERSION),))
            (version,) = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if int(version) == 1:
                self._db.executescript("BEGIN;" + _MIGRATE_1 + "COMMIT;")
                version = "2"
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open timeline store {path}: {exc}") from exc
        if int(version) != SCHEMA_VERSION:
            raise StoreError(f"{path} has schema {version}, this sidecar needs {SCHEMA_VERSION}")

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"timeline store {self.path}: {exc}") from exc

    def latest_epoch(self, stream: str) -> Epoch | None:
        rows = self._query("SELECT * FROM epochs WHERE stream=? ORDER BY idx DESC LIMIT 1",
                           (stream,))
        return _epoch(rows[0]) if rows else None

    def create_epoch(self, epoch: Epoch) -> Epoch:
        e = epoch
        self._query("INSERT OR IGNORE INTO epochs VALUES (?,?,?,?,?,?,?,?,?,?)", _epoch_row(e))
        rows = self._query("SELECT * FROM epochs WHERE stream=? AND idx=?", (e.stream, e.index))
        return _epoch(rows[0])

    def mirror_epoch(self, epoch: Epoch) -> None:
        """Overwrite with the cluster's record (the cluster store is the authority)."""
        self._query("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?,?)",
                    _epoch_row(epoch))

    def mirror_segments(self, records: list[SegmentRecord]) -> None:
        rows = [_segment_row(r) for r in records]
        try:
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO segments VALUES (?,?,?,?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"timeline store {self.path}: {exc}") from exc

    def epochs(self, stream: str) -> list[Epoch]:
        return [_epoch(r) for r in
                self._query("SELECT * FROM epochs WHERE stream=? ORDER BY idx", (stream,))]

    def put_segment(self, record: SegmentRecord) -> SegmentRecord:
        r = record
        self._query("INSERT OR IGNORE INTO segments VALUES (?,?,?,?,?,?,?,?)", _segment_row(r))
        rows = self._query("SELECT * FROM segments WHERE stream=? AND number=?",
                           (r.stream, r.number))
        if r.number % 100 == 0:  # now and then, forget what no playlist can list any more
            self._query("DELETE FROM segments WHERE stream=? AND number<?",
                        (r.stream, r.number - KEEP))
            self._query("DELETE FROM holders WHERE stream=? AND number<?",
                        (r.stream, r.number - KEEP))
        return _segment(rows[0])

    def segments(self, stream: str, since: int) -> list[SegmentRecord]:
        return [_segment(r) for r in self._query(
            "SELECT * FROM segments WHERE stream=? AND number>=? ORDER BY number",
            (stream, since))]

    def recent(self, stream: str, limit: int) -> list[SegmentRecord]:
        rows = self._query(
            "SELECT * FROM segments WHERE stream=? ORDER BY number DESC LIMIT ?", (stream, limit))
        return [_segment(r) for r in reversed(rows)]

    def last_number(self, stream: str) -> int | None:
        rows = self._query("SELECT MAX(number) FROM segments WHERE stream=?", (stream,))
        return rows[0][0] if rows else None

    def epoch_first_numbers(self, stream: str) -> dict[int, int]:
        rows = self._query(
            "SELECT epoch, MIN(number) FROM segments WHERE stream=? GROUP BY epoch", (stream,))
        return {epoch: number for epoch, number in rows}

    def add_holder(self, stream: str, number: int, node: str) -> None:
        self._query("INSERT OR IGNORE INTO holders VALUES (?,?,?)", (stream, number, node))

    def holders(self, stream: str, number: int) -> list[str]:
        rows = self._query("SELECT node FROM holders WHERE stream=? AND number=? ORDER BY node",
                           (stream, number))
        return [r[0] for r in rows]

    def newest_by_node(self, stream: str) -> dict[str, int]:
        rows = self._query("SELECT node, MAX(number) FROM holders WHERE stream=? GROUP BY node",
                           (stream,))
        return {node: number for node, number in rows}

    def heartbeat(self, node: str, url: str, now: int) -> None:
        self._query("INSERT OR REPLACE INTO nodes VALUES (?,?,?)", (node, url, now))

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(*r) for r in self._query("SELECT * FROM nodes ORDER BY node")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
