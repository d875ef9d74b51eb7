"""Child processes (started, bounded and stopped by PID) and /proc accounting.

Every child:

* gets its own session (so a Ctrl-C in the terminal reaches only us),
* gets ``PR_SET_PDEATHSIG(SIGKILL)``: it dies if this benchmark dies, however it dies,
* writes stdout+stderr to a log file,
* is stopped by its PID: SIGTERM, then SIGKILL after a bounded wait.

CPU time comes from ``/proc/PID/stat`` (utime + stime, summed over the process tree, which
is walked with ``/proc/PID/task/TID/children``); memory from ``VmRSS`` in
``/proc/PID/status``, sampled by a background thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Proc:
    """One child process, logging to ``log``; always stopped through ``stop()``."""

    def __init__(self, argv: Sequence[str], log: Path, name: str, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self.name = name
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                cwd=cwd, start_new_session=True, preexec_fn=_child_setup)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        _REGISTRY.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. True if it exited on SIGTERM."""
        clean = True
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            clean = self.wait(timeout)
            if not clean:
                self.signal(signal.SIGKILL)
                self.wait(5.0)
        _REGISTRY.discard(self)
        return clean


def stop_all(procs: Iterable[Proc], timeout: float = 10.0) -> dict[int, bool]:
    """SIGTERM all of them first, then wait for each (bounded), SIGKILL stragglers."""
    procs = list(procs)
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    clean: dict[int, bool] = {}
    for p in procs:
        clean[p.pid] = p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        p.stop(timeout=1.0)
    return clean


class _Registry:
    """Whatever is still running when the interpreter exits is stopped by PID."""

    def __init__(self) -> None:
        self.procs: set[Proc] = set()
        self.lock = threading.Lock()

    def add(self, p: Proc) -> None:
        with self.lock:
            self.procs.add(p)

    def discard(self, p: Proc) -> None:
        with self.lock:
            self.procs.discard(p)

    def stop_everything(self) -> None:
        with self.lock:
            procs = list(self.procs)
        stop_all(procs, timeout=5.0)


_REGISTRY = _Registry()
atexit.register(_REGISTRY.stop_everything)
stop_everything = _REGISTRY.stop_everything


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and all its descendants that exist right now (bounded walk)."""
    out: list[int] = []
    todo = [root]
    for _ in range(10_000):
        if not todo:
            break
        pid = todo.pop()
        if not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process, in clock ticks (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime, stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def status_kib(pid: int, *keys: str) -> dict[str, int]:
    """``VmRSS``/``VmHWM``... of one process in KiB (missing keys are absent)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_snapshot(roots: Iterable[int]) -> dict[int, int]:
    """CPU ticks of every process in the trees of ``roots``."""
    snap: dict[int, int] = {}
    for r in roots:
        for pid in tree(r):
            t = cpu_ticks(pid)
            if t is not None:
                snap[pid] = t
    return snap


def cpu_seconds_between(start: dict[int, int], end: dict[int, int]) -> float:
    """CPU seconds spent between two snapshots (new processes count from zero)."""
    return sum(t - start.get(pid, 0) for pid, t in end.items()) / CLK_TCK


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (busy excludes idle, iowait)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts[:8]]
    total = sum(vals)
    idle = vals[3] + vals[4]
    return total - idle, total


def pss_kib(pid: int) -> int:
    """Proportional set size (shared pages divided among sharers), in KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class RssSampler:
    """Samples the summed VmRSS of process trees every ``interval`` s in a thread.

    ``groups`` maps a label to root PIDs; each sample records the sum per label and the
    per-process values, so both the peak of the sum and per-process peaks are known.
    PSS (``/proc/PID/smaps_rollup``, ~1 ms per process to read) is sampled only every
    ``pss_every`` samples to keep the sampler cheap.
    """

    groups: dict[str, list[int]]
    interval: float = 0.5
    max_seconds: float = 3600.0
    pss_every: int = 10
    peak_sum: dict[str, int] = field(default_factory=dict)
    peak_pss: dict[str, int] = field(default_factory=dict)
    peak_anon: dict[str, int] = field(default_factory=dict)
    peak_proc: dict[int, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def sample_once(self, pss: bool | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            if pss is None:
                pss = self._count % self.pss_every == 0
            self._count += 1
            for label, roots in self.groups.items():
                total = anon = pss_total = 0
                for r in roots:
                    for pid in tree(r):
                        st = status_kib(pid, "VmRSS", "RssAnon")
                        kib = st.get("VmRSS", 0)
                        total += kib
                        anon += st.get("RssAnon", 0)
                        if pss:
                            pss_total += pss_kib(pid)
                        if kib > self.peak_proc.get(pid, 0):
                            self.peak_proc[pid] = kib
                self.samples.setdefault(label, []).append((now, total))
                self.peak_sum[label] = max(self.peak_sum.get(label, 0), total)
                self.peak_anon[label] = max(self.peak_anon.get(label, 0), anon)
                if pss:
                    self.peak_pss[label] = max(self.peak_pss.get(label, 0), pss_total)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(int(self.max_seconds / self.interval) + 1):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.sample_once()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def rss_at(self, label: str, t: float) -> int | None:
        """The first sample at or after monotonic time ``t``."""
        with self._lock:
            for ts, v in self.samples.get(label, []):
                if ts >= t:
                    return v
        return None
