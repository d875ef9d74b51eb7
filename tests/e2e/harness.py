"""End-to-end harness: real processes (ffmpeg, nginx-rtmp, HAProxy, Redis) for tests and benchmarks.

Everything here starts *real* Debian binaries on 127.0.0.1 with configuration files written into
a per-test work directory.  Nothing is mocked and nothing is downloaded at run time.

Design rules:

* Every process is a :class:`ManagedProcess`: its own process group, stdout+stderr into a log file,
  stopped by PID (SIGTERM, then SIGKILL after a timeout).  A :class:`ProcessRegistry` (the
  ``procs`` fixture in ``tests/e2e/conftest.py``) stops everything at teardown, even when a test
  fails; an ``atexit`` hook kills whatever is still alive when the interpreter exits.
* A missing component is an error, never a skip: :func:`require_binary` raises ``RuntimeError``
  naming the Debian package and ``bash scripts/setup.sh``.
* Every wait is bounded in time (and every polling loop in count).

Typical use::

    def test_something(procs, workdir):
        nginx = NginxRtmp(workdir / "nginx", registry=procs).start()
        enc = FfmpegEncoder(nginx.rtmp_url("cam"), logdir=workdir, registry=procs).start()
        nginx.wait_for_publisher("cam")
        result = ffmpeg_play(nginx.rtmp_url("cam"), seconds=4, logdir=workdir)
        assert result.ok, result.describe()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "BROWSER_DIR",
    "NGINX_RTMP_MODULE",
    "REPO_ROOT",
    "FfmpegEncoder",
    "Haproxy",
    "ManagedProcess",
    "NginxRtmp",
    "PlayResult",
    "ProbePacket",
    "ProcessRegistry",
    "PythonHttpServer",
    "RedisServer",
    "ffmpeg_play",
    "ffprobe_packet_details",
    "ffprobe_packets",
    "free_port",
    "require_binary",
    "require_nginx_rtmp_module",
    "wait_for_port",
    "wait_http",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Root of the repository (the directory holding ``pyproject.toml``)."""

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
"""npm project with hls.js, dashjs and playwright-core (installed by ``scripts/setup.sh``)."""

NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
"""Dynamic module shipped by Debian's ``libnginx-mod-rtmp``."""

LOCALHOST = "127.0.0.1"

#: binary name -> Debian package that provides it
DEBIAN_PACKAGE_OF: dict[str, str] = {
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "nginx": "nginx",
    "haproxy": "haproxy",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "chromium": "chromium",
    "node": "nodejs",
    "npm": "npm",
}


# --------------------------------------------------------------------------------------------
# Requirements
# --------------------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    """Return the absolute path of executable ``name`` or raise ``RuntimeError``.

    The error names the Debian package to install and tells to run ``bash scripts/setup.sh``.
    End-to-end tests must fail loudly (never skip) when a real component is missing.
    """
    path = shutil.which(name)
    if path is None:
        # Debian puts some daemons in /usr/sbin, which is not on every user's PATH.
        for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin", "/usr/local/sbin"):
            candidate = Path(d) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                path = str(candidate)
                break
    if path is None:
        package = DEBIAN_PACKAGE_OF.get(name, name)
        raise RuntimeError(
            f"required binary {name!r} not found on PATH: install the Debian package "
            f"{package!r} (run `bash scripts/setup.sh` from the repository root)"
        )
    return path


def require_nginx_rtmp_module() -> Path:
    """Return the path of nginx's RTMP module or raise ``RuntimeError`` naming the package."""
    if not NGINX_RTMP_MODULE.is_file():
        raise RuntimeError(
            f"nginx RTMP module {NGINX_RTMP_MODULE} not found: install the Debian package "
            "'libnginx-mod-rtmp' (run `bash scripts/setup.sh` from the repository root)"
        )
    return NGINX_RTMP_MODULE


# --------------------------------------------------------------------------------------------
# Ports and waiting
# --------------------------------------------------------------------------------------------

_issued_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (bind to port 0).

    Ports already handed out by this process are not returned again, so several calls in a row
    give distinct ports even before anything listens on them.
    """
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOCALHOST, 0))
                port = int(s.getsockname()[1])
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port
    raise RuntimeError("could not find a free TCP port on 127.0.0.1")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll ``predicate()`` until it is truthy; raise ``TimeoutError`` after ``timeout`` seconds.

    Bounded both in time and in the number of polls (``timeout / interval + 1``).
    """
    deadline = time.monotonic() + timeout
    max_polls = math.ceil(timeout / interval) + 1
    for _ in range(max_polls):
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    if predicate():
        return
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    process: ManagedProcess | None = None,
) -> None:
    """Wait until a TCP connect to ``host:port`` succeeds.

    If ``process`` is given and exits while waiting, raise ``RuntimeError`` with its log tail
    instead of waiting for the timeout.  Raises ``TimeoutError`` on timeout.
    """
    interval = 0.05
    deadline = time.monotonic() + timeout
    max_polls = math.ceil(timeout / interval) + 1
    for _ in range(max_polls):
        if _port_open(host, port, timeout=min(0.5, max(0.05, deadline - time.monotonic()))):
            return
        if process is not None and not process.running:
            raise RuntimeError(
                f"{process.name} exited with code {process.returncode} before listening on "
                f"{host}:{port}; log tail:\n{process.log_tail()}"
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    tail = f"; log tail:\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {host}:{port}{tail}")


def wait_http(
    url: str,
    timeout: float = 10.0,
    expect_status: int | None = 200,
    interval: float = 0.1,
) -> httpx.Response:
    """GET ``url`` until it answers ``expect_status`` (any status if ``None``); return the response.

    Each request has a short timeout; the loop is bounded by ``timeout`` and by a maximum number
    of attempts.  Raises ``TimeoutError`` with the last status or error seen.
    """
    deadline = time.monotonic() + timeout
    max_attempts = math.ceil(timeout / interval) + 1
    last: str = "no attempt"
    with httpx.Client(timeout=httpx.Timeout(2.0), trust_env=False) as client:
        for _ in range(max_attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                resp = client.get(url, timeout=max(0.1, min(2.0, remaining)))
                if expect_status is None or resp.status_code == expect_status:
                    return resp
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(
        f"timed out after {timeout:.1f}s waiting for {url} to answer {expect_status}; last: {last}"
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class Stoppable(Protocol):
    """Anything a :class:`ProcessRegistry` can stop at teardown."""

    def stop(self) -> object: ...


_live_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def _kill_leftovers() -> None:
    """atexit hook: SIGKILL every ManagedProcess that is still running (safety net)."""
    with _live_lock:
        leftovers = list(_live.values())
    for proc in leftovers:
        with contextlib.suppress(Exception):
            proc.kill()


atexit.register(_kill_leftovers)


class ProcessRegistry:
    """Collects processes and components so that all of them can be stopped at once.

    Stopping happens in reverse order of registration (last started, first stopped), e.g. the
    encoder before the media server.  Errors while stopping one item never prevent stopping the
    others.
    """

    def __init__(self) -> None:
        self._items: list[Stoppable] = []
        self._lock = threading.Lock()

    def add(self, item: Stoppable) -> None:
        """Register ``item`` (idempotent)."""
        with self._lock:
            if not any(existing is item for existing in self._items):
                self._items.append(item)

    def __iter__(self) -> Iterator[Stoppable]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def processes(self) -> list[ManagedProcess]:
        """All registered :class:`ManagedProcess` objects, including those inside components."""
        out: list[ManagedProcess] = []
        for item in self:
            if isinstance(item, ManagedProcess):
                out.append(item)
            else:
                proc = getattr(item, "process", None)
                if isinstance(proc, ManagedProcess):
                    out.append(proc)
        return out

    def stop_all(self) -> list[str]:
        """Stop every item, last registered first; return a list of error messages (if any)."""
        errors: list[str] = []
        with self._lock:
            items = list(reversed(self._items))
        for item in items:
            try:
                item.stop()
            except Exception as exc:
                errors.append(f"{item!r}: {type(exc).__name__}: {exc}")
        return errors


class ManagedProcess:
    """A child process in its own process group, logging stdout+stderr to ``logdir/name.log``.

    ``start()`` may be called again after the process ended (the log file is appended to, with a
    header line per start).  ``stop()`` sends ``sig`` to the PID, waits ``timeout`` seconds, then
    SIGKILLs the process (and its process group, which only contains processes it started).
    """

    def __init__(
        self,
        argv: Sequence[str],
        logdir: Path | str,
        name: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        registry: ProcessRegistry | None = None,
        start: bool = True,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv: list[str] = [str(a) for a in argv]
        self.name: str = name or Path(self.argv[0]).name
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = self.logdir / f"{self.name}.log"
        self.env: dict[str, str] | None = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        if registry is not None:
            registry.add(self)
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        """Start the process (no-op if it is already running)."""
        if self.running:
            return self
        self.starts += 1
        with self.log_path.open("ab") as log:
            header = f"=== start #{self.starts} at {time.time():.3f}: {' '.join(self.argv)}\n"
            log.write(header.encode())
            log.flush()
            env = None
            if self.env is not None:
                env = {**os.environ, **self.env}
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,  # own session and process group (pgid == pid)
            )
        with _live_lock:
            _live[id(self)] = self
        return self

    @property
    def pid(self) -> int:
        """PID of the current (or last) process; ``RuntimeError`` if never started."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; ``subprocess.TimeoutExpired`` on timeout."""
        return self.popen.wait(timeout=timeout)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process by PID (ignored if it already exited)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send ``sig`` by PID, wait up to ``timeout`` s, then SIGKILL. Return the exit code."""
        if self._popen is None:
            return None
        if self.running:
            self.send_signal(sig)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        with _live_lock:
            _live.pop(id(self), None)
        return self._popen.poll()

    def kill(self) -> int | None:
        """SIGKILL the process (by PID) and whatever is left in its own process group."""
        if self._popen is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie that will not die
            pass
        self._reap_group()
        with _live_lock:
            _live.pop(id(self), None)
        return self._popen.poll()

    def _reap_group(self) -> None:
        # The group id equals the PID of the process we started (start_new_session=True), so
        # this only reaches children it spawned itself (e.g. nginx workers).
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> ManagedProcess:
        self.stop(sig=sig, timeout=timeout)
        return self.start()

    # -- logs --------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Whole log file (all starts) as text; empty string if not created yet."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "never started"
        if self._popen is not None:
            state = "running" if self.running else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={getattr(self._popen, 'pid', None)} {state}>"


class _Component:
    """Base for components that wrap a single :class:`ManagedProcess` (``self.process``)."""

    name: str = "component"
    process: ManagedProcess | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        return self.process.stop(sig=sig, timeout=timeout)

    def kill(self) -> int | None:
        if self.process is None:
            return None
        return self.process.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    def log_text(self) -> str:
        return "" if self.process is None else self.process.log_text()

    def log_tail(self, lines: int = 40) -> str:
        return "" if self.process is None else self.process.log_tail(lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# nginx with the RTMP module (stands in for Wowza)
# --------------------------------------------------------------------------------------------


class NginxRtmp(_Component):
    """nginx + ``libnginx-mod-rtmp``: an RTMP relay (application ``live``) and optional HTTP.

    Args:
        workdir: directory for ``nginx.conf``, pid, logs and temp paths (created).
        rtmp_port: RTMP listen port on 127.0.0.1 (a free one if ``None``).
        http_port: if set (or ``http_root`` is set), also serve ``http_root`` over HTTP.
        extra_app_conf: directives inserted in ``application live { ... }``, e.g. nginx's own
            HLS: ``"hls on; hls_path /x; hls_fragment_slicing aligned; ..."``.
        http_root: directory served by the HTTP server (default ``workdir/html``).
        extra_http_conf: directives inserted in the ``server { ... }`` of the HTTP block.
        master_process: run nginx with a master and one worker (default: single process).
    """

    name = "nginx"

    def __init__(
        self,
        workdir: Path | str,
        rtmp_port: int | None = None,
        http_port: int | None = None,
        extra_app_conf: str = "",
        *,
        http_root: Path | str | None = None,
        extra_http_conf: str = "",
        app: str = "live",
        master_process: bool = False,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rtmp_port = rtmp_port if rtmp_port is not None else free_port()
        if http_root is not None and http_port is None:
            http_port = free_port()
        self.http_port = http_port
        self.http_root = Path(http_root).resolve() if http_root else self.workdir / "html"
        self.extra_app_conf = extra_app_conf
        self.extra_http_conf = extra_http_conf
        self.app = app
        self.master_process = master_process
        self.conf_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.process = None
        if registry is not None:
            registry.add(self)

    def rtmp_url(self, stream: str) -> str:
        """``rtmp://127.0.0.1:PORT/live/STREAM``."""
        return f"rtmp://{LOCALHOST}:{self.rtmp_port}/{self.app}/{stream}"

    def http_url(self, path: str = "/") -> str:
        if self.http_port is None:
            raise RuntimeError("NginxRtmp was created without an HTTP server")
        return f"http://{LOCALHOST}:{self.http_port}/{path.lstrip('/')}"

    def render_conf(self) -> str:
        w = self.workdir
        lines = [
            "daemon off;",
            f"master_process {'on' if self.master_process else 'off'};",
            "worker_processes 1;",
            f"pid {w / 'nginx.pid'};",
            f"error_log {self.error_log} info;",
            f"load_module {NGINX_RTMP_MODULE};",
            "events { worker_connections 1024; }",
            "rtmp {",
            "    server {",
            f"        listen {LOCALHOST}:{self.rtmp_port};",
            "        chunk_size 4096;",
            f"        application {self.app} {{",
            "            live on;",
            "            record off;",
        ]
        lines += [f"            {ln}" for ln in self.extra_app_conf.splitlines() if ln.strip()]
        lines += ["        }", "    }", "}"]
        if self.http_port is not None:
            self.http_root.mkdir(parents=True, exist_ok=True)
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (w / "tmp" / sub).mkdir(parents=True, exist_ok=True)
            lines += [
                "http {",
                f"    access_log {w / 'access.log'};",
                f"    client_body_temp_path {w / 'tmp' / 'client_body'};",
                f"    proxy_temp_path {w / 'tmp' / 'proxy'};",
                f"    fastcgi_temp_path {w / 'tmp' / 'fastcgi'};",
                f"    uwsgi_temp_path {w / 'tmp' / 'uwsgi'};",
                f"    scgi_temp_path {w / 'tmp' / 'scgi'};",
                "    sendfile off;",
                "    types {",
                "        application/vnd.apple.mpegurl m3u8;",
                "        video/mp2t ts;",
                "        video/mp4 mp4 m4s;",
                "        application/dash+xml mpd;",
                "        text/html html;",
                "    }",
                "    default_type application/octet-stream;",
                "    server {",
                f"        listen {LOCALHOST}:{self.http_port};",
                f"        root {self.http_root};",
                "        add_header Cache-Control no-cache;",
                "        add_header Access-Control-Allow-Origin *;",
            ]
            lines += [f"        {ln}" for ln in self.extra_http_conf.splitlines() if ln.strip()]
            lines += ["    }", "}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        """Write the config, validate it with ``nginx -t``, start nginx and wait for its ports."""
        nginx = require_binary("nginx")
        require_nginx_rtmp_module()
        self.conf_path.write_text(self.render_conf())
        base = [nginx, "-e", str(self.error_log), "-p", f"{self.workdir}/"]
        base += ["-c", str(self.conf_path)]
        check = subprocess.run(
            [*base, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed for {self.conf_path}:\n{check.stderr}")
        if self.process is None:
            self.process = ManagedProcess(base, self.workdir, name="nginx", start=False)
        self.process.start()
        wait_for_port(LOCALHOST, self.rtmp_port, timeout=timeout, process=self.process)
        if self.http_port is not None:
            wait_for_port(LOCALHOST, self.http_port, timeout=timeout, process=self.process)
        return self

    def log_text(self) -> str:
        """Process output followed by nginx's error.log."""
        err = ""
        with contextlib.suppress(FileNotFoundError):
            err = self.error_log.read_text(errors="replace")
        return super().log_text() + err

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_publisher(self, stream: str, timeout: float = 15.0) -> None:
        """Wait until ``stream`` has a publisher, judged from nginx's error log (info level)."""

        def published() -> bool:
            with contextlib.suppress(FileNotFoundError):
                text = self.error_log.read_text(errors="replace")
                return f"publish: name='{stream}'" in text
            return False

        wait_until(published, timeout, what=f"a publisher on {self.rtmp_url(stream)}")


# --------------------------------------------------------------------------------------------
# ffmpeg encoder (publisher) and players
# --------------------------------------------------------------------------------------------


class FfmpegEncoder(_Component):
    """ffmpeg publishing a synthetic live stream (testsrc2 + sine) to RTMP with ``-re``.

    Keyframes are exactly every ``keyint_seconds``: ``-g``/``-keyint_min`` = keyint*fps,
    ``-sc_threshold 0`` and ``-force_key_frames expr:gte(t,n_forced*K)``.  x264 uses
    ``ultrafast``/``zerolatency`` with one thread so several encoders fit on two cores.
    Every ``start()``/``restart()`` is a new RTMP publish whose timestamps start again from 0.
    """

    name = "ffmpeg-encoder"

    def __init__(
        self,
        rtmp_url: str,
        keyint_seconds: float = 2.0,
        fps: int = 25,
        size: str = "640x360",
        duration: float | None = None,
        logdir: Path | str | None = None,
        *,
        audio: bool = True,
        video_bitrate: str = "600k",
        audio_rate: int = 48000,
        bframes: int = 0,
        threads: int = 1,
        name: str | None = None,
        extra_output_args: Sequence[str] = (),
        output_format: str = "flv",
        registry: ProcessRegistry | None = None,
    ) -> None:
        if logdir is None:
            raise ValueError("logdir is required")
        self.rtmp_url = rtmp_url
        self.keyint_seconds = keyint_seconds
        self.fps = fps
        self.size = size
        self.duration = duration
        self.logdir = Path(logdir)
        self.audio = audio
        self.video_bitrate = video_bitrate
        self.audio_rate = audio_rate
        self.bframes = bframes
        self.threads = threads
        self.name = name or "ffmpeg-encoder"
        self.extra_output_args = list(extra_output_args)
        self.output_format = output_format
        self.process = None
        self.started_at: float | None = None
        """``time.time()`` of the last start (≈ RTMP timestamp 0 of the current publish)."""
        if registry is not None:
            registry.add(self)

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.keyint_seconds * self.fps))

    def argv(self) -> list[str]:
        ffmpeg = require_binary("ffmpeg")
        kbits = int(self.video_bitrate.rstrip("kK")) if self.video_bitrate[-1] in "kK" else None
        argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats"]
        argv += ["-re", "-f", "lavfi", "-i", f"testsrc2=size={self.size}:rate={self.fps}"]
        if self.audio:
            argv += [
                "-re", "-f", "lavfi",
                "-i", f"sine=frequency=440:beep_factor=4:sample_rate={self.audio_rate}",
            ]  # fmt: skip
        if self.duration is not None:
            argv += ["-t", f"{self.duration:g}"]
        argv += ["-map", "0:v"] + (["-map", "1:a"] if self.audio else [])
        argv += [
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p", "-threads", str(self.threads), "-bf", str(self.bframes),
            "-g", str(self.gop_frames), "-keyint_min", str(self.gop_frames),
            "-sc_threshold", "0",
            "-force_key_frames", f"expr:gte(t,n_forced*{self.keyint_seconds:g})",
            "-b:v", self.video_bitrate,
        ]  # fmt: skip
        if kbits is not None:
            argv += ["-maxrate", self.video_bitrate, "-bufsize", f"{2 * kbits}k"]
        if self.audio:
            argv += ["-c:a", "aac", "-b:a", "96k", "-ar", str(self.audio_rate), "-ac", "2"]
        argv += self.extra_output_args
        if self.output_format == "flv":
            argv += ["-flvflags", "no_duration_filesize"]
        argv += ["-f", self.output_format, self.rtmp_url]
        return argv

    def start(self) -> FfmpegEncoder:
        """Start publishing (a new RTMP session, timestamps from 0)."""
        argv = self.argv()
        if self.process is None:
            self.process = ManagedProcess(argv, self.logdir, name=self.name, start=False)
        self.process.argv = argv
        self.process.start()
        self.started_at = time.time()
        return self

    def restart(self, gap_seconds: float = 0.0, kill: bool = False) -> FfmpegEncoder:
        """Stop (SIGTERM, or SIGKILL if ``kill``), wait ``gap_seconds``, publish again from 0."""
        if kill:
            self.kill()
        else:
            self.stop()
        if gap_seconds > 0:
            time.sleep(gap_seconds)
        return self.start()


@dataclasses.dataclass
class PlayResult:
    """Outcome of :func:`ffmpeg_play`."""

    url: str
    returncode: int | None
    error_lines: list[str]
    elapsed: float
    timed_out: bool
    log_path: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error_lines and not self.timed_out

    def describe(self) -> str:
        errs = "\n  ".join(self.error_lines[:30]) or "(none)"
        return (
            f"ffmpeg play {self.url}: rc={self.returncode} timed_out={self.timed_out} "
            f"elapsed={self.elapsed:.1f}s errors:\n  {errs}"
        )


_play_counter = 0
_play_lock = threading.Lock()


def ffmpeg_play(
    url: str,
    seconds: float | None,
    logdir: Path | str,
    *,
    timeout: float | None = None,
    input_args: Sequence[str] = (),
    name: str | None = None,
) -> PlayResult:
    """Play ``url`` with FFmpeg's demuxers+decoders for ``seconds`` (all of it if ``None``).

    Runs ``ffmpeg -v error [input_args] -i URL -t SECONDS -f null -`` with a hard timeout
    (default ``seconds + 30``) and returns the exit code and every stderr line (each one is an
    error at ``-v error``).  Output goes to a log file in ``logdir``.

    Live RTMP is paced by the server.  Live HLS/DASH is not: ffmpeg fetches what is listed as
    fast as it can, so pass ``input_args=["-re"]`` to play a live playlist in real time (and
    thereby keep reloading it for ``seconds``).
    """
    global _play_counter
    ffmpeg = require_binary("ffmpeg")
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    with _play_lock:
        _play_counter += 1
        n = _play_counter
    log_path = logdir / f"{name or 'ffmpeg-play'}-{n}.log"
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "error", *input_args, "-i", url]
    if seconds is not None:
        argv += ["-t", f"{seconds:g}"]
    argv += ["-f", "null", "-"]
    if timeout is None:
        timeout = (seconds if seconds is not None else 60.0) + 30.0
    t0 = time.monotonic()
    timed_out = False
    with log_path.open("w+b") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            rc = proc.returncode
        log.seek(0)
        text = log.read().decode(errors="replace")
    elapsed = time.monotonic() - t0
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return PlayResult(url, rc, lines, elapsed, timed_out, log_path)


@dataclasses.dataclass(frozen=True)
class ProbePacket:
    """One packet as reported by ffprobe (timestamps in the stream's time base)."""

    stream_index: int
    pts: int | None
    dts: int | None
    duration: int | None
    size: int
    keyframe: bool
    time_base: Fraction

    @property
    def pts_seconds(self) -> Fraction | None:
        return None if self.pts is None else self.pts * self.time_base


def _int_or_none(v: object) -> int | None:
    if v is None or v == "N/A":
        return None
    return int(str(v))


def ffprobe_packet_details(
    path_or_url: Path | str,
    select: str = "v:0",
    timeout: float = 60.0,
    input_args: Sequence[str] = (),
) -> list[ProbePacket]:
    """All packets of stream ``select`` (ffprobe stream specifier) with pts/dts/flags/size."""
    ffprobe = require_binary("ffprobe")
    argv = [
        ffprobe, "-v", "error", *input_args, "-select_streams", select,
        "-show_entries", "packet=stream_index,pts,dts,duration,size,flags:stream=index,time_base",
        "-of", "json", str(path_or_url),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffprobe failed on {path_or_url}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout or "{}")
    time_bases = {
        int(s["index"]): Fraction(s.get("time_base", "1/1")) for s in data.get("streams", [])
    }
    out: list[ProbePacket] = []
    for p in data.get("packets", []):
        idx = int(p.get("stream_index", 0))
        out.append(
            ProbePacket(
                stream_index=idx,
                pts=_int_or_none(p.get("pts")),
                dts=_int_or_none(p.get("dts")),
                duration=_int_or_none(p.get("duration")),
                size=int(p.get("size", 0)),
                keyframe="K" in str(p.get("flags", "")),
                time_base=time_bases.get(idx, Fraction(1, 1)),
            )
        )
    return out


def ffprobe_packets(
    path_or_url: Path | str, select: str = "v:0", timeout: float = 60.0
) -> list[int]:
    """Video packet pts (stream time base) in file order; packets without pts are left out."""
    return [
        p.pts for p in ffprobe_packet_details(path_or_url, select, timeout) if p.pts is not None
    ]


# --------------------------------------------------------------------------------------------
# HAProxy
# --------------------------------------------------------------------------------------------


class Haproxy(_Component):
    """HAProxy in HTTP mode, round-robin per request, health checks on ``health_path``.

    No retries and no redispatch (a failing request reaches the client) unless
    ``redispatch_on_connection_failure``: then a request whose TCP connection is refused or
    closed before any response (a killed process) goes to another server; HTTP answers
    (404, 5xx) are never retried either way. No connection reuse
    (``http-reuse never`` + ``option http-server-close``), header ``X-Served-By: <server name>``
    on every response, checks every 500 ms (``fall 2 rise 2``).  Logs go to the process log.
    A runtime API socket listens on ``127.0.0.1:admin_port`` (see :meth:`command`).
    """

    name = "haproxy"

    def __init__(
        self,
        workdir: Path | str,
        port: int | None,
        backends: Sequence[tuple[str, str, int]],
        health_path: str = "/readyz",
        *,
        check_inter_ms: int = 500,
        timeout_server_s: float = 30.0,
        redispatch_on_connection_failure: bool = False,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.admin_port = free_port()
        self.redispatch = redispatch_on_connection_failure
        self.backends = list(backends)
        self.health_path = health_path
        self.check_inter_ms = check_inter_ms
        self.timeout_server_s = timeout_server_s
        self.conf_path = self.workdir / "haproxy.cfg"
        self.process = None
        if registry is not None:
            registry.add(self)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def render_conf(self) -> str:
        inter = self.check_inter_ms
        lines = [
            "global",
            "    log stdout format raw local0 info",
            "    maxconn 512",
            f"    stats socket ipv4@{LOCALHOST}:{self.admin_port} level admin",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    option http-server-close",
            "    http-reuse never",
            *(["    retries 2", "    option redispatch 1",
               "    retry-on conn-failure empty-response"] if self.redispatch
              else ["    retries 0"]),
            "    timeout connect 2s",
            "    timeout client 60s",
            f"    timeout server {int(self.timeout_server_s * 1000)}ms",
            "    timeout check 1s",
            "",
            "frontend fe",
            f"    bind {LOCALHOST}:{self.port}",
            "    default_backend be",
            "",
            "backend be",
            "    balance roundrobin",
            f"    option httpchk GET {self.health_path}",
            "    http-check expect status 200",
            "    http-response set-header X-Served-By %s",
            f"    default-server inter {inter}ms fastinter {inter}ms downinter {inter}ms "
            "fall 2 rise 2",
        ]
        for name, host, port in self.backends:
            lines.append(f"    server {name} {host}:{port} check")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> Haproxy:
        """Write and check the config (``haproxy -c``), start in the foreground, wait for ports."""
        haproxy = require_binary("haproxy")
        self.conf_path.write_text(self.render_conf())
        check = subprocess.run(
            [haproxy, "-c", "-q", "-f", str(self.conf_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c failed for {self.conf_path}:\n{check.stderr}")
        if self.process is None:
            argv = [haproxy, "-db", "-f", str(self.conf_path)]
            self.process = ManagedProcess(argv, self.workdir, name="haproxy", start=False)
        self.process.start()
        wait_for_port(LOCALHOST, self.port, timeout=timeout, process=self.process)
        wait_for_port(LOCALHOST, self.admin_port, timeout=timeout, process=self.process)
        return self

    def command(self, cmd: str, timeout: float = 5.0) -> str:
        """Send one runtime-API command (e.g. ``"show servers state"``) and return the answer."""
        with socket.create_connection((LOCALHOST, self.admin_port), timeout=timeout) as s:
            s.sendall(cmd.encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """``{server name: "UP" | "DOWN" | "MAINT" | ...}`` from ``show stat``."""
        out: dict[str, str] = {}
        text = self.command("show stat")
        header: list[str] = []
        for line in text.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
                continue
            if not line.strip() or not header:
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "be" and row.get("svname") not in ("BACKEND", "FRONTEND"):
                out[row["svname"]] = row.get("status", "?").split(" ")[0]
        return out

    def wait_server_state(self, server: str, state: str, timeout: float = 10.0) -> None:
        """Wait until ``server`` has health state ``state`` (e.g. ``"UP"`` or ``"DOWN"``)."""
        wait_until(
            lambda: self.server_states().get(server) == state,
            timeout,
            interval=0.1,
            what=f"haproxy server {server} to be {state}",
        )


class PythonHttpServer(_Component):
    """``python -m http.server`` on 127.0.0.1 serving ``directory`` (a trivial HTTP backend)."""

    name = "http-server"

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        *,
        name: str = "http-server",
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.name = name
        self.process = None
        if registry is not None:
            registry.add(self)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> PythonHttpServer:
        argv = [
            sys.executable, "-m", "http.server", str(self.port),
            "--bind", LOCALHOST, "--directory", str(self.directory),
        ]  # fmt: skip
        if self.process is None:
            self.process = ManagedProcess(
                argv, self.directory.parent, name=self.name, start=False,
                env={"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.process.start()
        wait_for_port(LOCALHOST, self.port, timeout=timeout, process=self.process)
        return self


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


class RedisServer(_Component):
    """``redis-server`` on 127.0.0.1:port without persistence; can be stopped and restarted
    on the same port (e.g. the "Redis unavailable for 30 s" scenario)."""

    name = "redis-server"

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        *,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.process = None
        if registry is not None:
            registry.add(self)

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (or start again, on the same port) and wait until it answers PING."""
        redis_server = require_binary("redis-server")
        argv = [
            redis_server, "--port", str(self.port), "--bind", LOCALHOST,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--daemonize", "no", "--loglevel", "notice",
        ]  # fmt: skip
        if self.process is None:
            self.process = ManagedProcess(argv, self.workdir, name="redis-server", start=False)
        self.process.start()
        wait_for_port(LOCALHOST, self.port, timeout=timeout, process=self.process)
        wait_until(self.ping, timeout, what=f"redis on port {self.port} to answer PING")
        return self

    def ping(self) -> bool:
        """True if the server answers PING (never raises)."""
        try:
            client = self.client(socket_timeout=1.0)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def client(self, socket_timeout: float = 2.0) -> redis.Redis:
        """A redis-py client for this server that fails fast (no retries) while it is down.

        redis-py >= 6 retries failed commands with backoff by default (about 4 s per command
        against a dead server); this client raises ``ConnectionError`` at once instead.
        """
        return redis.Redis(
            host=LOCALHOST,
            port=self.port,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def restart(self, down_seconds: float = 0.0) -> RedisServer:
        """Stop, stay down ``down_seconds``, start again on the same port."""
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        return self.start()
