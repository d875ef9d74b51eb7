"""Run a blocking source in a thread; hand its events to asyncio through a queue.

The thread reconnects forever with capped exponential backoff and puts ``END`` on the
queue when it is stopped, so the consumer always sees an explicit end.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from sidecar.clock import Clock
from sidecar.errors import ConfigError, InputError
from sidecar.model import InputClosed, InputOpened, RawPacket

if TYPE_CHECKING:
    from sidecar.metrics import StreamMetrics

log = logging.getLogger(__name__)

END = object()
"""Explicit end marker: the reader thread has stopped for good."""


class Connection(Protocol):
    opened: InputOpened

    def packets(self) -> Iterator[RawPacket]:
        """Yield packets until the input ends (return) or fails (raise ``InputError``)."""
        ...

    def close(self) -> None: ...


class Source(Protocol):
    description: str

    def connect(self, stop: threading.Event) -> Connection:
        """Open the input (blocking, bounded by a timeout); raise ``InputError``."""
        ...


def open_source(url: str, clock: Clock, *, open_timeout: float, read_timeout: float) -> Source:
    """Map an input URL to a source: ``synthetic:``, ``rtmp://``, ``udp://``, files, ..."""
    from sidecar.ingest.pyav import PyAVSource
    from sidecar.ingest.synthetic import SyntheticSource

    if url.startswith(("synthetic:", "test:")):
        return SyntheticSource.from_url(url, clock)
    if not url:
        raise ConfigError("empty input URL")
    return PyAVSource.from_url(url, clock, open_timeout=open_timeout, read_timeout=read_timeout)


class Reader:
    """One input's thread. ``queue`` receives InputOpened, RawPacket, InputClosed, END."""

    def __init__(
        self,
        name: str,
        source: Source,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[object],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.loop = loop
        self.queue = queue
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_event = threading.Event()
        self.metrics = metrics
        self.thread = threading.Thread(target=self._run, name=f"ingest-{name}", daemon=True)
        self.connected = False
        self.last_error: str | None = None
        self._outbox: collections.deque[object] = collections.deque()
        self._lock = threading.Lock()
        self._wakeup_pending = False

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)

    def _put(self, item: object) -> None:
        # Packets pile up in an outbox; the loop is woken once per batch, not per packet
        # (each wake-up is a syscall and a loop iteration).
        with self._lock:
            self._outbox.append(item)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # loop closed: nobody is listening any more
            self.stop_event.set()

    def _deliver(self) -> None:
        with self._lock:
            items = list(self._outbox)
            self._outbox.clear()
            self._wakeup_pending = False
        for item in items:
            self.queue.put_nowait(item)

    def _run(self) -> None:
        delay = self.backoff_initial
        while not self.stop_event.is_set():
            try:
                conn = self.source.connect(self.stop_event)
            except InputError as exc:
                self._report_error(str(exc), "connect")
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            log.info("stream %s: connected to %s", self.name, self.source.description)
            if self.metrics is not None:
                self.metrics.connected()
            self.connected = True
            self.last_error = None
            self._put(conn.opened)
            closed = InputClosed("end of input", error=False)
            try:
                for packet in conn.packets():
                    if self.stop_event.is_set():
                        break
                    self._put(packet)
                    delay = self.backoff_initial
            except InputError as exc:
                closed = InputClosed(str(exc), error=True)
                self._report_error(str(exc), "read")
            finally:
                self.connected = False
                conn.close()
            self._put(closed)
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.backoff_max)
        self._put(END)

    def _report_error(self, message: str, stage: str) -> None:
        if self.metrics is not None:
            self.metrics.input_error(stage, message)
        # Logged once per change of state, not once per retry.
        if message != self.last_error:
            log.warning("stream %s: input %s: %s (retrying)", self.name,
                        self.source.description, message)
        self.last_error = message
