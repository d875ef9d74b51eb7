"""Local segment files: atomic publication (write, fsync, rename) and bounded retention."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^(\d{1,20})\.(ts|m4s)$")
_INIT = re.compile(r"^init-(\d{1,10})\.mp4$")
_WRITES = itertools.count()


def _atomic_write(root: Path, name: str, data: bytes) -> Path:
    """Write, fsync, rename: readers (and a restarted node) only ever see whole files."""
    final = root / name
    # Unique per write, not per process: two threads of one node can publish the same name
    # at once (a peer fetch racing the local pipeline); sharing a temp file would tear it.
    tmp = root / f".{name}.{os.getpid()}.{threading.get_ident()}.{next(_WRITES)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


@dataclass(frozen=True, slots=True)
class LocalSegment:
    number: int
    path: Path
    sha256: str
    size: int

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'


class SegmentDir:
    """One rendition's directory. Readers only ever see complete files."""

    def __init__(self, root: Path, ext: str = "ts") -> None:
        self.root = root
        self.ext = ext
        self._lock = threading.Lock()
        self._index: dict[int, LocalSegment] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, number: int) -> Path:
        return self.root / f"{number}.{self.ext}"

    def recover(self) -> int:
        """After a crash: drop temporary files, index the complete ones. Returns the count."""
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        found = 0
        for path in self.root.iterdir():
            m = _SEGMENT.match(path.name)
            if not m or m.group(2) != self.ext:
                continue
            data = path.read_bytes()
            seg = LocalSegment(int(m.group(1)), path, hashlib.sha256(data).hexdigest(), len(data))
            with self._lock:
                self._index[seg.number] = seg
            found += 1
        return found

    def write(self, number: int, data: bytes, sha256: str | None = None) -> LocalSegment:
        """Publish ``data`` as segment ``number``; the same bytes twice are written once.

        ``sha256``: the caller's hash of ``data``, when it has one (it is not computed twice).
        """
        sha = sha256 or hashlib.sha256(data).hexdigest()
        with self._lock:
            existing = self._index.get(number)
        if existing is not None and existing.sha256 == sha:
            return existing
        final = _atomic_write(self.root, self.path_for(number).name, data)
        seg = LocalSegment(number, final, sha, len(data))
        with self._lock:
            self._index[number] = seg
        return seg

    def get(self, number: int) -> LocalSegment | None:
        with self._lock:
            return self._index.get(number)

    def numbers(self) -> list[int]:
        with self._lock:
            return sorted(self._index)

    def prune(self, keep_from: int) -> int:
        """Delete segments numbered below ``keep_from``; returns how many."""
        with self._lock:
            old = [n for n in self._index if n < keep_from]
            segs = [self._index.pop(n) for n in old]
        for seg in segs:
            seg.path.unlink(missing_ok=True)
        return len(segs)


class InitDir:
    """A CMAF track's init segments, one per epoch (``init-{epoch}.mp4``), beside its media."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._index: dict[int, LocalSegment] = {}
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def name(epoch: int) -> str:
        return f"init-{epoch}.mp4"

    def recover(self) -> int:
        found = 0
        for path in self.root.iterdir():
            m = _INIT.match(path.name)
            if m:
                data = path.read_bytes()
                with self._lock:
                    self._index[int(m.group(1))] = LocalSegment(
                        int(m.group(1)), path, hashlib.sha256(data).hexdigest(), len(data))
                found += 1
        return found

    def write(self, epoch: int, data: bytes, sha256: str | None = None) -> LocalSegment:
        sha = sha256 or hashlib.sha256(data).hexdigest()
        with self._lock:
            existing = self._index.get(epoch)
        if existing is not None and existing.sha256 == sha:
            return existing
        seg = LocalSegment(epoch, _atomic_write(self.root, self.name(epoch), data), sha, len(data))
        with self._lock:
            self._index[epoch] = seg
        return seg

    def get(self, epoch: int) -> LocalSegment | None:
        with self._lock:
            return self._index.get(epoch)

    def prune(self, keep_from: int) -> int:
        """Delete the inits of epochs below ``keep_from``."""
        with self._lock:
            old = [self._index.pop(e) for e in list(self._index) if e < keep_from]
        for seg in old:
            seg.path.unlink(missing_ok=True)
        return len(old)


@dataclass(frozen=True, slots=True)
class Output:
    """One kind of file a segment is published as: its part name, directory and extension."""

    part: str
    directory: str
    ext: str


TS = Output("ts", "src", "ts")
CMAF_VIDEO = Output("video", "video", "m4s")
CMAF_AUDIO = Output("audio", "audio", "m4s")
OUTPUTS = {o.part: o for o in (TS, CMAF_VIDEO, CMAF_AUDIO)}


class StreamFiles:
    """All local files of one stream: a segment directory per output, inits per CMAF track."""

    def __init__(self, root: Path, parts: tuple[str, ...]) -> None:
        self.root = root
        self.parts = parts
        self.dirs = {p: SegmentDir(root / OUTPUTS[p].directory, OUTPUTS[p].ext) for p in parts}
        self.inits = {p: InitDir(root / OUTPUTS[p].directory) for p in parts if p != "ts"}

    def recover(self) -> int:
        for d in self.inits.values():
            d.recover()
        return sum(d.recover() for d in self.dirs.values())

    def get(self, part: str, number: int) -> LocalSegment | None:
        d = self.dirs.get(part)
        return d.get(number) if d is not None else None

    def write(self, part: str, number: int, data: bytes, sha256: str | None = None
              ) -> LocalSegment:
        return self.dirs[part].write(number, data, sha256)

    def has_all(self, record_parts: dict[str, str], number: int) -> bool:
        """Every part we publish that the record lists is here with the record's hash."""
        for part, sha in record_parts.items():
            if part in self.dirs:
                seg = self.dirs[part].get(number)
                if seg is None or seg.sha256 != sha:
                    return False
        return True

    def prune(self, keep_from: int) -> int:
        return sum(d.prune(keep_from) for d in self.dirs.values())
