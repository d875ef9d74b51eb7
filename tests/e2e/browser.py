"""Real-browser player probe for end-to-end tests: hls.js / dash.js in Debian's headless Chromium.

Runs ``node tests/browser/player.mjs`` (see that file for the JSON it writes) as a child process
in its own process group, with a hard timeout, and returns a typed :class:`BrowserResult`.

Typical use::

    result = play_in_browser(f"{lb.url}/live/cam/index.m3u8", seconds=15, workdir=workdir)
    assert result.errors == [], result.describe()

    # in the background, while the test kills and restarts servers:
    player = start_in_browser(url, seconds=180, workdir=workdir, registry=procs)
    ...  # kill / restart nodes
    result = player.result()
    assert not result.errors and result.max_stall_seconds < 2, result.describe()

A missing component (node, the npm packages in ``tests/browser/node_modules``, Chromium) raises
``RuntimeError`` naming ``bash scripts/setup.sh``; it never skips.  Errors *during playback* are
data in the result; ``RuntimeError`` from :meth:`BrowserPlayer.result` means the probe itself
failed (the browser or page could not start, or the probe overran its hard timeout).

All times in a result are seconds relative to the moment the player was attached to the page;
``started_at_epoch`` is that moment as Unix time (to line events up with server kills).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from tests.e2e.harness import (
    BROWSER_DIR,
    ManagedProcess,
    ProcessRegistry,
    PythonHttpServer,
    require_binary,
    wait_for_port,
)

__all__ = [
    "CHROMIUM",
    "PLAYER_JS",
    "BrowserPlayer",
    "BrowserResult",
    "CorsHttpServer",
    "PlayerError",
    "Stall",
    "check_browser_requirements",
    "play_in_browser",
    "start_in_browser",
]

PLAYER_JS = BROWSER_DIR / "player.mjs"
"""The probe script (node)."""

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (package ``chromium``); never a downloaded browser."""

Engine = Literal["hls", "dash"]

_NODE_PACKAGES = ("playwright-core", "hls.js", "dashjs")
_WATCHDOG_MARGIN = 25.0  # player.mjs exits by itself within seconds + 25 s
_DEFAULT_EXTRA_TIMEOUT = 45.0  # our hard timeout: seconds + 45 s
_TERM_GRACE = 10.0  # after SIGTERM the probe writes what it has and exits


# --------------------------------------------------------------------------------------------
# Requirements
# --------------------------------------------------------------------------------------------


def check_browser_requirements(chromium: Path | str = CHROMIUM) -> str:
    """Return the path of ``node``; raise ``RuntimeError`` if anything the probe needs is missing.

    Checks node, the npm packages (hls.js, dashjs, playwright-core) in ``tests/browser`` and the
    Chromium binary.  The message tells to run ``bash scripts/setup.sh``.
    """
    node = require_binary("node")
    missing = [
        pkg for pkg in _NODE_PACKAGES
        if not (BROWSER_DIR / "node_modules" / pkg / "package.json").is_file()
    ]  # fmt: skip
    if missing:
        raise RuntimeError(
            f"npm packages {', '.join(missing)} missing in {BROWSER_DIR / 'node_modules'}: "
            "run `bash scripts/setup.sh` from the repository root "
            "(or `cd tests/browser && npm ci`)"
        )
    if not PLAYER_JS.is_file():
        raise RuntimeError(f"browser probe {PLAYER_JS} is missing")
    chromium = Path(chromium)
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        raise RuntimeError(
            f"Chromium not found at {chromium}: install the Debian package 'chromium' "
            "(run `bash scripts/setup.sh` from the repository root)"
        )
    return node


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


class _ItemAccess:
    """Dict-style reads on a dataclass (``x["details"]``, ``x.get("fatal")``), so code written
    against the raw JSON objects keeps working."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


@dataclasses.dataclass(frozen=True)
class Stall(_ItemAccess):
    """From a ``waiting`` event (after playback first started) to the next ``playing``."""

    start: float
    end: float
    duration: float
    open: bool = False
    """True if playback had not resumed when the probe ended (``end`` is the end of the run)."""


@dataclasses.dataclass(frozen=True)
class PlayerError(_ItemAccess):
    """One ``Hls.Events.ERROR`` (or dash.js ``ERROR`` / ``PLAYBACK_ERROR``).

    For dash.js ``type`` is ``"dash"`` (or ``"dash-playback"``), ``details`` the numeric error
    code as a string, and ``fatal`` the probe's classification (dash.js has no fatal flag:
    manifest load/parse, MSE capability and "no streams" errors and media element errors).
    """

    t: float
    type: str
    details: str
    fatal: bool
    frag_sn: int | str | None = None
    frag_url: str | None = None
    level: int | None = None
    response_code: int | None = None
    url: str | None = None
    reason: str | None = None
    message: str | None = None
    action: int | str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlayerError:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        parts = [
            f"t={self.t:.2f}s",
            self.type,
            self.details,
            "FATAL" if self.fatal else "non-fatal",
        ]
        if self.response_code is not None:
            parts.append(f"HTTP {self.response_code}")
        if self.frag_sn is not None:
            parts.append(f"frag sn={self.frag_sn}")
        url = self.frag_url or self.url
        if url:
            parts.append(url)
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        if self.message:
            parts.append(f"message={self.message!r}")
        return " ".join(parts)


@dataclasses.dataclass
class BrowserResult:
    """What the browser player saw (the JSON written by ``player.mjs``), plus where it is."""

    url: str
    engine: str
    hlsjs_version: str | None
    seconds: float
    errors: list[PlayerError]
    fatal_errors: int
    frags_loaded: int
    levels_loaded: int
    waiting_events: list[float]
    stalls: list[Stall]
    total_stall_seconds: float
    time_samples: list[tuple[float, float | None]]
    """``[wall, video.currentTime]`` every 250 ms."""
    max_time_backwards: float
    """Largest decrease of ``currentTime`` between two consecutive samples (0 if none)."""
    started_playing_at: float | None
    """Time of the first ``playing`` event (``None``: never played)."""
    final_current_time: float | None
    console_errors: list[dict[str, Any]]
    """``{t, kind: console|pageerror|crash, text}``."""

    # -- extras ------------------------------------------------------------------------------
    engine_version: str | None = None
    browser_version: str | None = None
    browser_pid: int | None = None
    elapsed: float = 0.0
    """Seconds actually played (page clock), normally ``seconds``."""
    started_at_epoch: float | None = None
    error_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    frags: list[list[Any]] = dataclasses.field(default_factory=list)
    """hls.js: ``[t, sn, level, duration, cc]``; dash.js: ``[t, index, type, duration, url]``."""
    levels: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """hls.js ``LEVEL_LOADED``: ``{t, level, media_sequence, end_sn, fragments, live, ...}``."""
    playing_events: list[float] = dataclasses.field(default_factory=list)
    stalled_events: list[float] = dataclasses.field(default_factory=list)
    video_events: list[list[Any]] = dataclasses.field(default_factory=list)
    """``[t, type, currentTime]`` for waiting/playing/stalled/error/seeking/seeked/... events."""
    video_errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    engine_events: list[list[Any]] = dataclasses.field(default_factory=list)
    max_stall_seconds: float = 0.0
    buffer_samples: list[list[Any]] = dataclasses.field(default_factory=list)
    """``[wall, seconds buffered ahead of currentTime, readyState]`` every 250 ms."""
    max_frozen_seconds: float = 0.0
    """Longest time ``currentTime`` did not move after playback started (with or without a
    ``waiting`` event), from the 250 ms samples."""
    current_time_at_start: float | None = None
    current_time_advanced: float = 0.0
    """``final_current_time`` minus ``currentTime`` at the first ``playing`` event."""
    play_rejections: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    http_errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Responses >= 400 and failed requests seen by the page: ``{t, url, status, failure}``."""
    page_crashed: bool = False
    snapshot_failures: int = 0
    complete: bool = False
    """The page was followed for the whole run: ``elapsed`` ≈ ``seconds`` and no crash, frozen
    renderer, watchdog or signal cut it short.  Assert it alongside the playback checks."""
    start_error: str | None = None
    watchdog_fired: bool = False
    aborted: str | None = None
    json_path: Path | None = None
    log_path: Path | None = None
    wall_seconds: float = 0.0
    """How long the probe process ran (Python's clock, includes browser start and stop)."""

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        *,
        json_path: Path | None = None,
        log_path: Path | None = None,
        wall_seconds: float = 0.0,
    ) -> BrowserResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        kwargs["errors"] = [PlayerError.from_json(e) for e in data.get("errors", [])]
        kwargs["stalls"] = [
            Stall(float(s["start"]), float(s["end"]), float(s["duration"]), bool(s.get("open")))
            for s in data.get("stalls", [])
        ]
        kwargs["time_samples"] = [(float(t), ct) for t, ct in data.get("time_samples", [])]
        kwargs.update(json_path=json_path, log_path=log_path, wall_seconds=wall_seconds)
        return cls(**kwargs)

    @classmethod
    def load(cls, json_path: Path | str) -> BrowserResult:
        """Read a result JSON written by ``player.mjs``."""
        path = Path(json_path)
        return cls.from_json(json.loads(path.read_text()), json_path=path)

    # -- convenience -------------------------------------------------------------------------

    @property
    def played(self) -> bool:
        return self.started_playing_at is not None

    @property
    def nonfatal_errors(self) -> int:
        return len(self.errors) - self.fatal_errors

    def errors_with(self, details: str) -> list[PlayerError]:
        return [e for e in self.errors if e.details == details]

    def describe(self, max_lines: int = 15) -> str:
        """A multi-line human summary for assertion messages."""
        started = "NEVER" if self.started_playing_at is None else f"{self.started_playing_at:.2f}s"
        lines = [
            f"{self.engine} {self.engine_version} in Chromium {self.browser_version}: {self.url}",
            f"  played {self.elapsed:.1f}/{self.seconds:g}s (probe ran {self.wall_seconds:.1f}s); "
            f"started playing at {started}; currentTime {self.current_time_at_start} -> "
            f"{self.final_current_time} (+{self.current_time_advanced:.2f}s)",
            f"  frags_loaded={self.frags_loaded} levels_loaded={self.levels_loaded} "
            f"errors={len(self.errors)} (fatal {self.fatal_errors}) {self.error_counts}",
            f"  stalls={len(self.stalls)} total={self.total_stall_seconds:.3f}s "
            f"max={self.max_stall_seconds:.3f}s max_frozen={self.max_frozen_seconds:.2f}s "
            f"max_time_backwards={self.max_time_backwards:.3f}s waiting={len(self.waiting_events)}",
        ]
        flags = [
            name for name, on in (
                ("INCOMPLETE RUN", not self.complete),
                ("WATCHDOG FIRED", self.watchdog_fired),
                (f"ABORTED ({self.aborted})", bool(self.aborted)),
                ("PAGE CRASHED", self.page_crashed),
                (f"{self.snapshot_failures} snapshot failures", self.snapshot_failures > 0),
                (f"START ERROR: {self.start_error}", bool(self.start_error)),
            ) if on
        ]  # fmt: skip
        if flags:
            lines.append("  " + "; ".join(flags))
        for title, items in (
            ("errors", [e.describe() for e in self.errors]),
            ("stalls", [f"{s.start:.2f}s..{s.end:.2f}s ({s.duration:.3f}s)" for s in self.stalls]),
            ("http errors", [f"t={h['t']:.2f}s {h.get('status') or h.get('failure')} {h['url']}"
                             for h in self.http_errors]),
            ("console errors", [f"t={c['t']:.2f}s {c['kind']}: {c['text']}"
                                for c in self.console_errors]),
            ("video errors", [str(v) for v in self.video_errors]),
            ("play() rejected", [str(p) for p in self.play_rejections]),
        ):  # fmt: skip
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {item}" for item in items[:max_lines]]
                if len(items) > max_lines:
                    lines.append(f"    ... {len(items) - max_lines} more")
        if self.json_path is not None:
            lines.append(f"  json: {self.json_path}")
        if self.log_path is not None:
            lines.append(f"  log: {self.log_path}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running the probe
# --------------------------------------------------------------------------------------------

_counter = itertools.count(1)
_live_lock = threading.Lock()
_live: dict[int, BrowserPlayer] = {}


def _kill_leftovers() -> None:
    with _live_lock:
        players = list(_live.values())
    for p in players:
        with contextlib.suppress(Exception):
            p.kill()


atexit.register(_kill_leftovers)


class BrowserPlayer:
    """A running ``player.mjs`` (started by :func:`start_in_browser`).

    The process has its own process group and is stopped by PID.  Chromium is started by it in
    a process group of its own; it exits when the probe exits, and :meth:`kill` also kills it by
    PID (after checking that the PID still is *our* Chromium: its command line names this
    probe's private temporary directory).  Can be registered in a
    :class:`~tests.e2e.harness.ProcessRegistry` (it has ``stop()``).
    """

    def __init__(
        self,
        url: str,
        seconds: float,
        workdir: Path | str,
        engine: Engine = "hls",
        *,
        timeout: float | None = None,
        name: str = "browser",
        chromium: Path | str = CHROMIUM,
        dash_live_delay: float | None = None,
        registry: ProcessRegistry | None = None,
    ) -> None:
        if engine not in ("hls", "dash"):
            raise ValueError(f"engine must be 'hls' or 'dash', not {engine!r}")
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        node = check_browser_requirements(chromium)
        self.url = url
        self.seconds = float(seconds)
        self.engine: Engine = engine
        self.timeout = (
            float(timeout) if timeout is not None else self.seconds + _DEFAULT_EXTRA_TIMEOUT
        )
        n = next(_counter)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = f"{name}-{n}"
        self.json_path = self.workdir / f"{self.name}.json"
        self.log_path = self.workdir / f"{self.name}.log"
        # Playwright's profile dir and Chromium's temp files go into a private TMPDIR, removed
        # when the probe ends (even if it had to be SIGKILLed); its name also identifies our
        # Chromium.  Short and under /tmp: Chromium's singleton socket path must fit in 108
        # bytes (sockaddr_un), which a pytest tmp_path does not.
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"hls-probe-{n}-", dir="/tmp"))
        self.argv = [
            node, str(PLAYER_JS), "--url", url, "--seconds", f"{self.seconds:g}",
            "--out", str(self.json_path), "--engine", engine, "--chromium", str(chromium),
        ]  # fmt: skip
        if dash_live_delay is not None:
            self.argv += ["--dash-live-delay", f"{dash_live_delay:g}"]
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
        self._result: BrowserResult | None = None
        self._lock = threading.Lock()
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.time():.3f}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.started_monotonic = time.monotonic()
            self.started_at = time.time()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=BROWSER_DIR,
                env=env,
                start_new_session=True,  # own process group (pgid == pid)
            )
        with _live_lock:
            _live[id(self)] = self
        if registry is not None:
            registry.add(self)

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- result ------------------------------------------------------------------------------

    def result(self, timeout: float | None = None) -> BrowserResult:
        """Wait for the probe (at most ``timeout`` s, default: until its hard timeout) and return
        what it recorded.

        Raises ``RuntimeError`` if the probe overran the timeout (it is then stopped: SIGTERM,
        which makes it write what it has, then SIGKILL) or could not start the browser/page.
        """
        with self._lock:
            if self._result is not None:
                return self._result
            if timeout is None:
                timeout = max(0.0, self.started_monotonic + self.timeout - time.monotonic())
            try:
                rc = self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                partial = (
                    f"; partial result in {self.json_path}" if self.json_path.is_file() else ""
                )
                raise RuntimeError(
                    f"browser probe {self.name} did not finish within {timeout:.0f}s "
                    f"(playing {self.seconds:g}s of {self.url}); stopped it{partial}\n"
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                ) from None
            wall = time.monotonic() - self.started_monotonic
            self._kill_browser()
            self._forget()
            data: dict[str, Any] | None = None
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                data = json.loads(self.json_path.read_text())
            if rc != 0 or data is None:
                start_error = (data or {}).get("start_error")
                raise RuntimeError(
                    f"browser probe {self.name} failed (exit code {rc}) for {self.url}"
                    + (f": {start_error}" if start_error else "")
                    + f"\nlog tail ({self.log_path}):\n{self.log_tail()}"
                )
            self._result = BrowserResult.from_json(
                data, json_path=self.json_path, log_path=self.log_path, wall_seconds=wall
            )
            return self._result

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, timeout: float = _TERM_GRACE) -> int | None:
        """SIGTERM the probe by PID (it writes what it recorded), SIGKILL after ``timeout``."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int | None:
        """SIGKILL the probe, its process group and our Chromium (all by PID)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._kill_browser()
        self._forget()
        return self._popen.poll()

    def _forget(self) -> None:
        with _live_lock:
            _live.pop(id(self), None)
        if not self.running:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _browser_pid(self) -> int | None:
        m = None
        with contextlib.suppress(FileNotFoundError):
            m = re.search(r"\] browser \S+ pid (\d+)", self.log_path.read_text(errors="replace"))
        return int(m.group(1)) if m else None

    def _kill_browser(self) -> None:
        """Safety net: Chromium normally exits with the probe (its DevTools pipe closes)."""
        pid = self._browser_pid()
        if pid is None:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return  # already gone
        if str(self.tmpdir) not in cmdline:
            return  # PID reused by something else: not ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # Playwright starts Chromium as a group leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> BrowserPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<BrowserPlayer {self.name} pid={self.pid} {self.engine} {self.url} {state}>"


def start_in_browser(
    url: str,
    seconds: float,
    workdir: Path | str,
    engine: Engine = "hls",
    *,
    timeout: float | None = None,
    name: str = "browser",
    chromium: Path | str = CHROMIUM,
    dash_live_delay: float | None = None,
    registry: ProcessRegistry | None = None,
) -> BrowserPlayer:
    """Start playing ``url`` for ``seconds`` in the background; call ``.result()`` later.

    ``timeout`` is the hard limit for the whole probe (default ``seconds + 45``; the probe's
    own watchdog ends it within ``seconds + 25``).  Files: ``workdir/<name>-<n>.json`` and
    ``.log``.  Pass ``registry=procs`` so a failing test still stops it at teardown.

    Players run with their defaults (hls.js: ``new Hls({lowLatencyMode: false})``).  For dash.js
    only, ``dash_live_delay`` overrides the live delay (default: the MPD's
    ``suggestedPresentationDelay``).
    """
    return BrowserPlayer(
        url, seconds, workdir, engine,
        timeout=timeout, name=name, chromium=chromium, dash_live_delay=dash_live_delay,
        registry=registry,
    )  # fmt: skip


def play_in_browser(
    url: str,
    seconds: float,
    workdir: Path | str,
    engine: Engine = "hls",
    *,
    timeout: float | None = None,
    name: str = "browser",
    chromium: Path | str = CHROMIUM,
    dash_live_delay: float | None = None,
) -> BrowserResult:
    """Play ``url`` for ``seconds`` in headless Chromium (hls.js or dash.js) and return the result.

    Blocks for about ``seconds`` + 1-3 s (browser start and stop).  See :func:`start_in_browser`.
    """
    player = start_in_browser(
        url, seconds, workdir, engine,
        timeout=timeout, name=name, chromium=chromium, dash_live_delay=dash_live_delay,
    )  # fmt: skip
    try:
        return player.result()
    finally:
        player.kill()


# --------------------------------------------------------------------------------------------
# A static file server that browsers may fetch from (CORS)
# --------------------------------------------------------------------------------------------

_CORS_SERVER = r"""
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
                      ".m4s": "video/iso.segment", ".mp4": "video/mp4",
                      ".mpd": "application/dash+xml"}
    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Date, Age, ETag, Content-Length")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()
port, root = int(sys.argv[1]), sys.argv[2]
http.server.ThreadingHTTPServer.daemon_threads = True
handler = functools.partial(Handler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
print(f"serving {root} on 127.0.0.1:{port} with CORS *", flush=True)
server.serve_forever()
"""


class CorsHttpServer(PythonHttpServer):
    """Like :class:`~tests.e2e.harness.PythonHttpServer` (serves ``directory`` on 127.0.0.1),
    but every response, 404s included, carries ``Access-Control-Allow-Origin: *`` and
    ``Cache-Control: no-cache``, so a page on another origin (the browser probe) can read it."""

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        *,
        name: str = "cors-http-server",
        registry: ProcessRegistry | None = None,
    ) -> None:
        super().__init__(directory, port, name=name, registry=registry)

    def start(self, timeout: float = 10.0) -> CorsHttpServer:
        argv = [sys.executable, "-c", _CORS_SERVER, str(self.port), str(self.directory)]
        if self.process is None:
            self.process = ManagedProcess(
                argv, self.directory.parent, name=self.name, start=False,
                env={"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.process.start()
        wait_for_port("127.0.0.1", self.port, timeout=timeout, process=self.process)
        return self
