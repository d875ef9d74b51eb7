"""Several inputs for one stream, tried in order: follow the stream to whichever has it.

A host's own media server comes first, the other hosts' after it. At most one input is read
at a time:

* **Down**: while no input is being read, the inputs are tried in list order; one that
  failed is tried again only after its backoff (doubling from ``retry_initial`` up to
  ``retry_max``: short, every second of it is content lost), and one ``connect`` gives up
  after ``connect_budget`` seconds (the ``Reader`` then waits and calls again).
* **Standby**: while a later input is read, the earlier (preferred) ones are probed, one
  attempt at a time, each on its own backoff (``backoff_initial`` up to ``backoff_max``).
  A probe that opens the stream ends the current connection; the next ``connect`` hands
  over the probe's connection (the pipeline sees an ordinary reconnect and decides the
  epoch as it always does: same epoch when the timestamps continue, a new one when they
  restart; a partial slot is never published twice because a reconnect into the same
  epoch drops what was open and publishes only slots it saw from their start).

Everything here runs in the ``Reader``'s thread except the probe, which has its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sidecar.clock import Clock
from sidecar.errors import InputError
from sidecar.grid import TICKS_PER_SECOND
from sidecar.ingest.reader import Connection, Source
from sidecar.model import InputOpened, RawPacket

log = logging.getLogger(__name__)

Wait = Callable[[threading.Event, float], object]
Spawn = Callable[[Callable[[], None]], object]


def backoff(failures: int, initial: float, maximum: float) -> float:
    """Seconds before an input that failed ``failures`` times in a row is tried again."""
    if failures <= 0:
        return 0.0
    return min(initial * 2 ** min(failures - 1, 30), maximum)


@dataclass
class InputState:
    """What this node knows about one input."""

    url: str
    failures: int = 0
    next_try: int = 0  # clock ticks
    last_error: str | None = None
    reads: int = 0  # connections read from this input

    def due(self, now: int) -> bool:
        return now >= self.next_try

    def failed(self, now: int, error: str, initial: float, maximum: float) -> None:
        self.failures += 1
        self.last_error = error
        self.next_try = now + round(backoff(self.failures, initial, maximum) * TICKS_PER_SECOND)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0
        self.last_error = None
        self.reads += 1


def _spawn_thread(target: Callable[[], None]) -> object:
    thread = threading.Thread(target=target, name="ingest-probe", daemon=True)
    thread.start()
    return thread


class FailoverSource:
    """A ``Source`` over several sources in order of preference."""

    def __init__(self, sources: Sequence[Source], clock: Clock, *, name: str = "",
                 backoff_initial: float = 0.5, backoff_max: float = 8.0,
                 retry_initial: float = 0.25, retry_max: float = 1.0,
                 connect_budget: float = 15.0, wait: Wait | None = None,
                 spawn: Spawn = _spawn_thread) -> None:
        if not sources:
            raise ValueError("at least one input")
        self.sources = list(sources)
        self.clock = clock
        self.name = name
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.connect_budget = connect_budget
        self._wait: Wait = wait or (lambda ev, seconds: ev.wait(seconds))
        self._spawn = spawn
        self.states = [InputState(s.description) for s in self.sources]
        self.description = " | ".join(s.description for s in self.sources)
        self.active: int | None = None
        self.last_active: int | None = None  # kept across reconnects: counts moves
        self.reason = "not connected yet"
        self.moves = 0
        self._lock = threading.Lock()
        self._probing = False
        self._ready: tuple[int, Connection] | None = None

    # -- choosing an input --------------------------------------------------------------

    def connect(self, stop: threading.Event) -> Connection:
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            index, conn = ready
            if stop.is_set():
                conn.close()
                raise InputError("stopped")
            return self._use(index, conn, stop, moved_back=True)
        started = self.clock.now()
        budget = round(self.connect_budget * TICKS_PER_SECOND)
        for _ in range(1000):  # bounded: each round tries or waits at least once
            for index, state in enumerate(self.states):
                if stop.is_set():
                    raise InputError("stopped")
                if not state.due(self.clock.now()):
                    continue
                try:
                    conn = self.sources[index].connect(stop)
                except InputError as exc:
                    self._failed(index, str(exc), self.retry_initial, self.retry_max)
                    continue
                return self._use(index, conn, stop)
            now = self.clock.now()
            left = started + budget - now
            if left <= 0 or stop.is_set():
                break
            soonest = min(s.next_try for s in self.states)
            self._wait(stop, max(0.0, min(soonest - now, left)) / TICKS_PER_SECOND)
        self.active = None
        self.reason = "no input has the stream: " + self._errors(len(self.states))
        raise InputError(self.reason)

    def _failed(self, index: int, error: str, initial: float, maximum: float) -> None:
        state = self.states[index]
        if error != state.last_error:
            log.info("stream %s: input %d (%s): %s", self.name, index + 1, state.url, error)
        state.failed(self.clock.now(), error, initial, maximum)

    def _errors(self, upto: int) -> str:
        return "; ".join(f"{i + 1} {s.url}: {s.last_error or 'not tried'}"
                         for i, s in enumerate(self.states[:upto]))

    def _use(self, index: int, conn: Connection, stop: threading.Event, *,
             moved_back: bool = False) -> FailoverConnection:
        previous, self.last_active = self.last_active, index
        self.states[index].succeeded()
        self.active = index
        if index == 0:
            self.reason = "first choice"
        else:
            self.reason = ("the stream is not on the preferred input(s): "
                           + self._errors(index))
        if moved_back:
            self.reason = f"moved back: the stream appeared on input {index + 1}"
        if previous is not None and previous != index:
            self.moves += 1
        log.info("stream %s: reading input %d (%s): %s", self.name, index + 1,
                 self.states[index].url, self.reason)
        return FailoverConnection(self, index, conn, stop)

    # -- probing the preferred inputs -----------------------------------------------------

    def probe_due(self, current: int) -> int | None:
        """The preferred input to probe now while ``current`` is read, if any."""
        with self._lock:
            if self._probing or self._ready is not None:
                return None
        now = self.clock.now()
        return next((i for i in range(current) if self.states[i].due(now)), None)

    def start_probe(self, index: int, current: FailoverConnection) -> None:
        with self._lock:
            self._probing = True

        def probe() -> None:
            try:
                conn = self.sources[index].connect(current.probe_stop)
            except InputError as exc:
                self._failed(index, str(exc), self.backoff_initial, self.backoff_max)
                with self._lock:
                    self._probing = False
                return
            with self._lock:
                self._probing = False
                keep = not current.closed and not current.probe_stop.is_set()
                if keep:
                    self._ready = (index, conn)
            if not keep:
                conn.close()
                return
            log.info("stream %s: the stream is on preferred input %d (%s): moving back",
                     self.name, index + 1, self.states[index].url)

        self._spawn(probe)

    def take_ready(self) -> bool:
        with self._lock:
            return self._ready is not None

    def discard_ready(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            ready[1].close()

    # -- what /streams shows ---------------------------------------------------------------

    def status(self) -> dict[str, object]:
        now = self.clock.now()
        inputs = []
        for i, s in enumerate(self.states):
            state = ("active" if i == self.active
                     else "down" if s.last_error is not None else "standby")
            inputs.append({"url": s.url, "state": state, "error": s.last_error,
                           "failures": s.failures,
                           "retry_in": round(max(0, s.next_try - now) / TICKS_PER_SECOND, 1),
                           "connections": s.reads})
        return {"active": None if self.active is None else self.states[self.active].url,
                "active_index": self.active, "reason": self.reason, "moves": self.moves,
                "inputs": inputs}


class FailoverConnection:
    """One input's connection; ends early when a preferred input has the stream."""

    def __init__(self, source: FailoverSource, index: int, conn: Connection,
                 stop: threading.Event) -> None:
        self.source = source
        self.index = index
        self.conn = conn
        self.opened: InputOpened = conn.opened
        self.stop = stop
        self.probe_stop = threading.Event()
        self.closed = False

    def packets(self) -> Iterator[RawPacket]:
        src = self.source
        try:
            for packet in self.conn.packets():
                yield packet
                if self.stop.is_set():
                    return
                if src.take_ready():
                    return  # the Reader reconnects and gets the preferred input
                if self.index > 0:
                    due = src.probe_due(self.index)
                    if due is not None:
                        src.start_probe(due, self)
                        if src.take_ready():  # a probe that ran inline (tests)
                            return
        except InputError as exc:
            src.states[self.index].last_error = str(exc)
            raise
        if not src.take_ready():
            src.states[self.index].last_error = "end of input"

    def close(self) -> None:
        self.closed = True
        self.probe_stop.set()
        if self.stop.is_set():
            self.source.discard_ready()
        if self.source.active == self.index:
            self.source.active = None
            if not self.source.take_ready():
                self.source.reason = (f"input {self.index + 1} ended: "
                                      f"{self.source.states[self.index].last_error}")
                # The stream has moved: look everywhere again from a fresh backoff (probes
                # of the preferred inputs may have backed off to the maximum meanwhile).
                for state in self.source.states:
                    state.failures, state.next_try = 0, 0
        self.conn.close()


def open_inputs(urls: Sequence[str], clock: Clock, *, name: str, open_timeout: float,
                read_timeout: float) -> Source:
    """One source for a stream's inputs: the input itself, or a ``FailoverSource``."""
    from sidecar.ingest.reader import open_source

    sources = [open_source(u, clock, open_timeout=open_timeout, read_timeout=read_timeout)
               for u in urls]
    if len(sources) == 1:
        return sources[0]
    return FailoverSource(sources, clock, name=name)
