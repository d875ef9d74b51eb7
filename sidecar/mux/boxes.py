"""A tiny ISO-BMFF box walker and patcher (enough for CMAF init and media segments)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# Boxes whose payload is a plain sequence of child boxes.
CONTAINERS = frozenset({
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"mvex", b"moof", b"traf",
    b"udta", b"mfra",
})
# Sample entries: fixed fields, then child boxes (avcC, hvcC, esds, btrt, ...).
_SAMPLE_ENTRY_HEADER = {
    b"avc1": 78, b"avc3": 78, b"hvc1": 78, b"hev1": 78,
    b"mp4a": 28, b"Opus": 28, b"ac-3": 28, b"ec-3": 28,
}


@dataclass(frozen=True, slots=True)
class Box:
    """One box: ``start`` is its offset in the buffer, ``body`` the payload offset."""

    type: bytes
    start: int
    body: int
    end: int

    def payload(self, data: bytes) -> bytes:
        return data[self.body : self.end]


def walk(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes directly inside ``data[start:end]``; raises ValueError on a malformed size."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise ValueError(f"truncated large box header at {pos}")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"bad size {size} for box {kind!r} at {pos}")
        yield Box(kind, pos, pos + header, pos + size)
        pos += size


def children(data: bytes, box: Box) -> Iterator[Box]:
    """Child boxes of a container, ``stsd`` or sample entry (none for a leaf box)."""
    if box.type == b"stsd":
        yield from walk(data, box.body + 8, box.end)  # version/flags + entry_count
    elif box.type in _SAMPLE_ENTRY_HEADER:
        yield from walk(data, box.body + _SAMPLE_ENTRY_HEADER[box.type], box.end)
    elif box.type in CONTAINERS:
        yield from walk(data, box.body, box.end)


def iter_all(data: bytes) -> Iterator[tuple[int, Box]]:
    """Every box, depth-first, with its nesting depth."""
    stack = [(0, b) for b in reversed(list(walk(data)))]
    while stack:
        depth, box = stack.pop()
        yield depth, box
        stack.extend((depth + 1, c) for c in reversed(list(children(data, box))))


def find(data: bytes, path: str) -> list[Box]:
    """Boxes at a slash-separated path from the top level, e.g. ``"moof/traf/tfdt"``."""
    kinds = [p.encode("ascii") for p in path.split("/")]
    level = [b for b in walk(data) if b.type == kinds[0]]
    for kind in kinds[1:]:
        level = [c for b in level for c in children(data, b) if c.type == kind]
    return level


def full_box(data: bytes, box: Box) -> tuple[int, int]:
    """(version, flags) of a full box."""
    vf = struct.unpack_from(">I", data, box.body)[0]
    return vf >> 24, vf & 0xFFFFFF


def make_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a track fragment, with tfhd/trex defaults resolved."""

    dts: int
    duration: int
    size: int
    flags: int
    cto: int

    @property
    def pts(self) -> int:
        return self.dts + self.cto

    @property
    def sync(self) -> bool:
        return not self.flags & 0x10000  # sample_is_non_sync_sample


def tfdt(data: bytes, box: Box) -> int:
    version, _ = full_box(data, box)
    fmt = ">Q" if version == 1 else ">I"
    return int(struct.unpack_from(fmt, data, box.body + 4)[0])


def mfhd(data: bytes, box: Box) -> int:
    return int(struct.unpack_from(">I", data, box.body + 4)[0])


def traf_samples(data: bytes, traf: Box, trex_flags: int = 0, trex_duration: int = 0,
                 trex_size: int = 0) -> list[Sample]:
    """The samples of one ``traf`` (every ``trun``), decode times from its ``tfdt``."""
    kids = list(children(data, traf))
    tfhd = next(b for b in kids if b.type == b"tfhd")
    _, hf = full_box(data, tfhd)
    pos = tfhd.body + 8  # version/flags, track_ID
    if hf & 0x01:
        pos += 8  # base_data_offset
    if hf & 0x02:
        pos += 4  # sample_description_index
    d_dur, d_size, d_flags = trex_duration, trex_size, trex_flags
    for bit in (0x08, 0x10, 0x20):
        if hf & bit:
            value = struct.unpack_from(">I", data, pos)[0]
            pos += 4
            if bit == 0x08:
                d_dur = value
            elif bit == 0x10:
                d_size = value
            else:
                d_flags = value
    t = next((tfdt(data, b) for b in kids if b.type == b"tfdt"), 0)
    out: list[Sample] = []
    for trun in (b for b in kids if b.type == b"trun"):
        version, f = full_box(data, trun)
        count = struct.unpack_from(">I", data, trun.body + 4)[0]
        pos = trun.body + 8
        if f & 0x01:
            pos += 4  # data_offset
        first_flags = None
        if f & 0x04:
            first_flags = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        for i in range(count):
            dur, size, flags, cto = d_dur, d_size, d_flags, 0
            if f & 0x100:
                dur = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            if f & 0x200:
                size = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            if f & 0x400:
                flags = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            elif i == 0 and first_flags is not None:
                flags = first_flags
            if f & 0x800:
                cto = struct.unpack_from(">i" if version == 1 else ">I", data, pos)[0]
                pos += 4
            out.append(Sample(t, dur, size, flags, cto))
            t += dur
    return out
