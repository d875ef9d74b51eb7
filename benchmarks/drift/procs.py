"""Minimal process helpers for the drift benchmark (self-contained: no test code needed).

Every child runs in its own session (process group == its PID), logs to a file, dies with
the benchmark (``PR_SET_PDEATHSIG``; start children from the main thread only) and is
stopped by PID: SIGTERM (or SIGKILL), a bounded wait, then SIGKILL to its own group.
A :class:`Registry` stops everything it started, last first, and an ``atexit`` hook
kills whatever is still alive if the interpreter exits early.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LOCALHOST = "127.0.0.1"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

_PACKAGES = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "nginx": "nginx"}
_PR_SET_PDEATHSIG = 1
_live: dict[int, Proc] = {}
_live_lock = threading.Lock()
_ports: set[int] = set()
_ports_lock = threading.Lock()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def require_binary(name: str) -> str:
    """Absolute path of ``name`` or ``RuntimeError`` naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"):
            cand = Path(d) / name
            if cand.is_file() and os.access(cand, os.X_OK):
                path = str(cand)
                break
    if path is None:
        raise RuntimeError(f"required binary {name!r} not found: install the Debian package "
                           f"{_PACKAGES.get(name, name)!r}")
    return path


def require_rtmp_module() -> Path:
    if not NGINX_RTMP_MODULE.is_file():
        raise RuntimeError(f"{NGINX_RTMP_MODULE} not found: install the Debian package "
                           "'libnginx-mod-rtmp'")
    return NGINX_RTMP_MODULE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket() as s:
                s.bind((LOCALHOST, 0))
                port = int(s.getsockname()[1])
            if port not in _ports:
                _ports.add(port)
                return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll ``pred`` until truthy; bounded in time and in count. ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if pred():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if pred():
        return
    raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")


class Proc:
    """One child process: own process group, output to ``logdir/name.log``, stop by PID."""

    def __init__(self, argv: Sequence[str], logdir: Path, name: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        logdir.mkdir(parents=True, exist_ok=True)
        self.log_path = logdir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Proc:
        if self.running:
            return self
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== start #{self.starts} at {time.time():.3f}: "
                      f"{' '.join(self.argv)}\n".encode())
            log.flush()
            env = {**os.environ, **self.env} if self.env else None
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                          start_new_session=True,
                                          preexec_fn=_die_with_parent)
        with _live_lock:
            _live[id(self)] = self
        return self

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Signal by PID, wait at most ``timeout`` s, then SIGKILL; reap the process group."""
        if self.popen is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
        # The group id is our child's PID (own session): only processes it started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with _live_lock:
            _live.pop(id(self), None)
        return self.popen.poll()

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL, timeout=5.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Registry:
    """Everything started for one scenario; ``stop_all`` stops it, last started first."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        if proc not in self.items:
            self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5.0)


def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live.values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()


atexit.register(_kill_leftovers)
