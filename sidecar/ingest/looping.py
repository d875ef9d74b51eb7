"""Loop a paced media file forever with continuous timestamps (one epoch, no jumps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

from sidecar.model import InputOpened, RawPacket

if TYPE_CHECKING:
    from sidecar.ingest.pyav import PyAVConnection, PyAVSource


class LoopingConnection:
    def __init__(self, source: PyAVSource, first: PyAVConnection, stop: threading.Event) -> None:
        self.source = source
        self.current = first
        self.opened: InputOpened = first.opened
        self.stop = stop

    def packets(self) -> Iterator[RawPacket]:
        offset = Fraction(0)
        while not self.stop.is_set():
            start: Fraction | None = None
            end = Fraction(0)
            count = 0
            for p in self.current.packets():
                ref = p.dts if p.dts is not None else p.pts
                assert ref is not None
                t = ref * p.time_base
                start = t if start is None else min(start, t)
                end = max(end, t + p.duration * p.time_base)
                count += 1
                shift = int(offset / p.time_base)
                yield replace(
                    p,
                    pts=None if p.pts is None else p.pts + shift,
                    dts=None if p.dts is None else p.dts + shift,
                )
            self.current.close()
            if count == 0 or self.stop.is_set():
                return
            offset += end - (start or Fraction(0))
            self.current = self.source.connect(self.stop)

    def close(self) -> None:
        self.current.close()


class LoopingSource:
    def __init__(self, inner: PyAVSource) -> None:
        self.inner = inner
        self.description = f"{inner.description} (looped)"

    def connect(self, stop: threading.Event) -> LoopingConnection:
        return LoopingConnection(self.inner, self.inner.connect(stop), stop)
