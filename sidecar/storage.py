"""Local segment files: atomic publication (write, fsync, rename) and bounded retention."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^(\d{1,20})\.(ts|m4s)$")


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
        final = self.path_for(number)
        tmp = self.root / f".{number}.{self.ext}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
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
