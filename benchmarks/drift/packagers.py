"""The real processes of one scenario: origin, encoder, relays, and the packager nodes.

Topology (all on 127.0.0.1, every node pulls the same stream from the same origin)::

    ffmpeg encoder --RTMP--> nginx origin --+--> [relay] --> sidecar a, b, ...
     (-re, tee: also         (live on,      +--> [relay] --> ffmpeg -f hls 1, 2, ...
      writes ref-K.flv)       record off)   +--> [relay] --> nginx-rtmp HLS 1, 2, ...
                                                             (pull ... static)

The nginx peers each pull from the origin exactly as the sidecar nodes do (one RTMP play
connection per node), which is the fair setup: same source, same join times, same jitter.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.drift.media import SegmentMedia, inspect_segment
from benchmarks.drift.procs import (
    LOCALHOST,
    Proc,
    Registry,
    free_port,
    port_open,
    require_binary,
    require_rtmp_module,
    wait_until,
)

APP = "live"
STREAM = "demo"


def _nginx_conf(workdir: Path, rtmp_port: int, app_conf: str) -> str:
    return "\n".join([
        "daemon off;",
        "master_process off;",
        "worker_processes 1;",
        f"pid {workdir / 'nginx.pid'};",
        f"error_log {workdir / 'error.log'} info;",
        f"load_module {require_rtmp_module()};",
        "events { worker_connections 256; }",
        "rtmp {",
        "  server {",
        f"    listen {LOCALHOST}:{rtmp_port};",
        "    chunk_size 4096;",
        f"    application {APP} {{",
        "      live on;",
        "      record off;",
        *[f"      {line}" for line in app_conf.splitlines() if line.strip()],
        "    }",
        "  }",
        "}",
        "",
    ])


def _nginx_proc(workdir: Path, rtmp_port: int, app_conf: str, name: str) -> Proc:
    nginx = require_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(_nginx_conf(workdir, rtmp_port, app_conf))
    import subprocess

    argv = [nginx, "-p", f"{workdir}/", "-e", str(workdir / "error.log"), "-c", str(conf)]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30,
                           check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed for {conf}:\n{check.stderr}")
    return Proc(argv, workdir, name)


class Origin:
    """nginx-rtmp relaying the encoder to every node (stands in for Wowza)."""

    def __init__(self, workdir: Path, registry: Registry) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc = registry.add(_nginx_proc(workdir, self.port, "", "nginx-origin"))

    @property
    def url(self) -> str:
        return f"rtmp://{LOCALHOST}:{self.port}/{APP}/{STREAM}"

    def start(self) -> None:
        self.proc.start()
        wait_until(lambda: port_open(self.port) or not self.proc.running, 10,
                   "the origin nginx to listen")
        if not self.proc.running:
            raise RuntimeError(f"origin nginx exited:\n{self.proc.log_tail()}")

    def publishes(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            text = (self.workdir / "error.log").read_text(errors="replace")
            return text.count(f"publish: name='{STREAM}'")
        return 0


_COLOURS = ("white", "red", "blue", "green", "yellow", "cyan", "magenta", "black")


def _session_colour(session: int) -> str:
    return _COLOURS[session % len(_COLOURS)]


class Encoder:
    """ffmpeg publishing testsrc2 + sine with ``-re`` and keyframes every ``keyint`` s.

    The ``tee`` muxer also writes every published packet to ``ref-K.flv`` (K = session):
    the reference the segments are identified against (see ``media.py``). With ``source``
    (a file), the file is looped and copied instead of encoding the test pattern.
    """

    def __init__(self, workdir: Path, url: str, registry: Registry, *, keyint: float,
                 fps: int = 25, size: str = "640x360", source: Path | None = None) -> None:
        self.workdir = workdir
        self.url = url
        self.keyint = keyint
        self.fps = fps
        self.size = size
        self.source = source
        self.sessions: list[tuple[float, Path]] = []
        self.proc = registry.add(Proc(["true"], workdir, "ffmpeg-encoder"))

    def argv(self, ref: Path, session: int = 0) -> list[str]:
        ffmpeg = require_binary("ffmpeg")
        argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats"]
        if self.source is not None:
            argv += ["-re", "-stream_loop", "-1", "-i", str(self.source), "-map", "0:v:0",
                     "-map", "0:a:0?", "-c", "copy"]
        else:
            gop = max(1, round(self.keyint * self.fps))
            argv += [
                "-re", "-f", "lavfi", "-i", f"testsrc2=size={self.size}:rate={self.fps}",
                "-re", "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000",
                "-map", "0:v", "-map", "1:a",
                # A small box whose colour changes with every encoder session: the test
                # pattern restarts from frame 0 after an encoder restart, and the box keeps
                # the pictures of two sessions apart (frame identity, see media.py).
                "-vf", f"drawbox=x=0:y=0:w=32:h=32:t=fill:color={_session_colour(session)}",
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                "-pix_fmt", "yuv420p", "-threads", "1", "-bf", "0",
                "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
                "-force_key_frames", f"expr:gte(t,n_forced*{self.keyint:g})",
                "-b:v", "600k", "-maxrate", "600k", "-bufsize", "1200k",
                "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-ac", "2",
            ]  # fmt: skip
        argv += ["-flags", "+global_header", "-f", "tee",
                 f"[f=flv:flvflags=no_duration_filesize]{self.url}|[f=flv]{ref}"]
        return argv

    def start(self) -> None:
        ref = self.workdir / f"ref-{len(self.sessions)}.flv"
        self.proc.argv = self.argv(ref, len(self.sessions))
        self.proc.start()
        self.sessions.append((time.time(), ref))

    def stop(self) -> None:
        self.proc.stop()


class Relay:
    """One delaying relay process in front of one node (see ``relay.py``)."""

    def __init__(self, workdir: Path, target_port: int, jitter_ms: float, seed: int,
                 name: str, registry: Registry) -> None:
        self.port = free_port()
        argv = [sys.executable, str(Path(__file__).with_name("relay.py")),
                "--listen", str(self.port), "--target", f"{LOCALHOST}:{target_port}",
                "--jitter-ms", f"{jitter_ms:g}", "--seed", str(seed), "--max-seconds", "900"]
        self.proc = registry.add(Proc(argv, workdir, name))

    def start(self) -> None:
        self.proc.start()
        wait_until(lambda: port_open(self.port) or not self.proc.running, 10, "a relay")
        if not self.proc.running:
            raise RuntimeError(f"relay exited:\n{self.proc.log_tail()}")


@dataclass
class Listing:
    """One fetch of a node's media playlist."""

    text: str | None
    media_sequence: int = 0
    uris: list[str] = field(default_factory=list)
    gaps: set[str] = field(default_factory=set)
    maps: dict[str, str] = field(default_factory=dict)  # fMP4: segment URI -> its EXT-X-MAP


def parse_playlist(text: str | None) -> Listing:
    if not text or not text.startswith("#EXTM3U"):
        return Listing(None)
    seq = 0
    uris: list[str] = []
    gaps: set[str] = set()
    maps: dict[str, str] = {}
    gap = False
    current_map = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            with contextlib.suppress(ValueError):
                seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            current_map = line.split('URI="', 1)[-1].split('"', 1)[0]
        elif line == "#EXT-X-GAP":
            gap = True
        elif line and not line.startswith("#"):
            uris.append(line)
            if gap:
                gaps.add(line)
            if current_map:
                maps[line] = current_map
            gap = False
    return Listing(text, seq, uris, gaps, maps)


class Node:
    """One packager process. Subclasses say how to start it and where its output is."""

    packager = "?"

    def __init__(self, label: str, workdir: Path, input_url: str, registry: Registry) -> None:
        self.label = label
        self.workdir = workdir
        self.input_url = input_url
        self.registry = registry
        self.proc: Proc = registry.add(Proc(["true"], workdir, f"{self.packager}-{label}"))
        self.down = True          # intentionally stopped (not started yet, or killed)
        self.restarts = 0         # restarts by the supervisor after an unexpected exit
        self.last_error = ""      # why the last segment fetch failed

    @property
    def name(self) -> str:
        return f"{self.packager} {self.label}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc.argv = self.argv()
        self.proc.start()
        self.down = False

    def kill(self) -> None:
        self.down = True
        self.proc.kill()

    def stop(self) -> None:
        self.down = True
        self.proc.stop()

    def supervise(self) -> bool:
        """Restart the process if it exited on its own (as systemd would). True if restarted."""
        if self.down or self.proc.running:
            return False
        self.restarts += 1
        self.proc.start()
        return True

    # -- output -----------------------------------------------------------------------
    def playlist(self, client: httpx.Client) -> str | None:
        raise NotImplementedError

    def segment(self, uri: str, client: httpx.Client) -> bytes | None:
        raise NotImplementedError

    def inspect(self, uri: str, data: bytes, listing: Listing,
                client: httpx.Client) -> SegmentMedia:
        """What the segment holds (its first video frame); MPEG-TS unless overridden."""
        return inspect_segment(data)

    def segment_stat(self, uri: str) -> tuple[int, int] | None:
        """(mtime_ns, size) of the segment file, to notice a file rewritten in place."""
        path = self.segment_path(uri)
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def segment_path(self, uri: str) -> Path:
        raise NotImplementedError


class SidecarNode(Node):
    packager = "sidecar"

    def __init__(self, label: str, workdir: Path, input_url: str, registry: Registry, *,
                 store: Path, segment_duration: float, clock_offset_ms: int = 0,
                 code: Path | None = None) -> None:
        super().__init__(label, workdir, input_url, registry)
        if code is not None:
            # Run the snapshot of the sidecar package taken at the start of the benchmark,
            # not whatever the working tree holds when this node (re)starts. The cwd is
            # the node's own directory: ``python -m`` puts the cwd first on sys.path.
            workdir.mkdir(parents=True, exist_ok=True)
            self.proc.env = {"PYTHONPATH": str(code)}
            self.proc.cwd = workdir
        self.port = free_port()
        self.store = store
        self.segment_duration = segment_duration
        self.clock_offset_ms = clock_offset_ms
        self.base = f"http://{LOCALHOST}:{self.port}/{APP}/{STREAM}/src"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "sidecar", "serve", "--node-id", self.label,
                "--listen", f"{LOCALHOST}:{self.port}", "--data-dir", str(self.workdir / "data"),
                "--store", str(self.store), "--segment-duration", f"{self.segment_duration:g}",
                "--stream", f"{APP}/{STREAM}={self.input_url}"]
        if self.clock_offset_ms:
            argv += ["--clock-offset-ms", str(self.clock_offset_ms)]
        return argv

    def playlist(self, client: httpx.Client) -> str | None:
        try:
            r = client.get(f"{self.base}/media.m3u8", timeout=2.0)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def segment(self, uri: str, client: httpx.Client) -> bytes | None:
        try:
            r = client.get(f"{self.base}/{uri}")
        except httpx.HTTPError as exc:
            self.last_error = f"GET {uri}: {type(exc).__name__}: {exc}"
            return None
        if r.status_code != 200:
            self.last_error = f"GET {uri}: HTTP {r.status_code} {r.text[:120]!r}"
            return None
        return r.content

    def segment_path(self, uri: str) -> Path:
        return self.workdir / "data" / "segments" / APP / STREAM / "src" / uri


class SidecarCmafNode(SidecarNode):
    """The sidecar's CMAF output alone (``--outputs cmaf``): fMP4 HLS video track."""

    packager = "sidecar-cmaf"

    def __init__(self, label: str, workdir: Path, input_url: str, registry: Registry, *,
                 store: Path, segment_duration: float, clock_offset_ms: int = 0,
                 code: Path | None = None) -> None:
        super().__init__(label, workdir, input_url, registry, store=store,
                         segment_duration=segment_duration, clock_offset_ms=clock_offset_ms,
                         code=code)
        self.base = f"http://{LOCALHOST}:{self.port}/{APP}/{STREAM}/video"
        self._inits: dict[str, bytes] = {}

    def argv(self) -> list[str]:
        return [*super().argv(), "--outputs", "cmaf"]

    def inspect(self, uri: str, data: bytes, listing: Listing,
                client: httpx.Client) -> SegmentMedia:
        name = listing.maps.get(uri)
        if name is None:
            return SegmentMedia(None, 0, False)
        init = self._inits.get(name) or self.segment(name, client)
        if init is None:
            return SegmentMedia(None, 0, False)
        self._inits[name] = init
        return inspect_segment(data, init)

    def segment_path(self, uri: str) -> Path:
        return self.workdir / "data" / "segments" / APP / STREAM / "video" / uri


class _FileNode(Node):
    """A peer that writes its playlist and segments into a directory."""

    playlist_name = "index.m3u8"

    @property
    def outdir(self) -> Path:
        return self.workdir / "hls"

    def playlist(self, client: httpx.Client) -> str | None:
        try:
            return (self.outdir / self.playlist_name).read_text(errors="replace")
        except OSError:
            return None

    def segment(self, uri: str, client: httpx.Client) -> bytes | None:
        try:
            return self.segment_path(uri).read_bytes()
        except OSError as exc:
            self.last_error = f"read {uri}: {exc.strerror}"
            return None

    def segment_path(self, uri: str) -> Path:
        return self.outdir / uri


class FfmpegHlsNode(_FileNode):
    """``ffmpeg -i rtmp://... -c copy -f hls -hls_time D -hls_list_size 10`` (stock options)."""

    packager = "ffmpeg-hls"

    def __init__(self, label: str, workdir: Path, input_url: str, registry: Registry, *,
                 segment_duration: float) -> None:
        super().__init__(label, workdir, input_url, registry)
        self.segment_duration = segment_duration

    def argv(self) -> list[str]:
        self.outdir.mkdir(parents=True, exist_ok=True)
        return [require_binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "warning",
                "-nostats", "-i", self.input_url, "-c", "copy", "-f", "hls",
                "-hls_time", f"{self.segment_duration:g}", "-hls_list_size", "10",
                str(self.outdir / self.playlist_name)]


class NginxHlsNode(_FileNode):
    """nginx-rtmp pulling from the origin and writing HLS with aligned, timestamp-named cuts."""

    packager = "nginx-hls"
    playlist_name = f"{STREAM}.m3u8"

    def __init__(self, label: str, workdir: Path, input_url: str, registry: Registry, *,
                 segment_duration: float) -> None:
        super().__init__(label, workdir, input_url, registry)
        self.rtmp_port = free_port()
        self.segment_duration = segment_duration
        base, _, _name = input_url.rpartition("/")
        self.pull = base  # rtmp://HOST:PORT/live
        self.proc = self._make()

    def _make(self) -> Proc:
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.outdir.chmod(0o777)  # the nginx worker writes as 'nobody'
        d = self.segment_duration
        conf = "\n".join([
            f"pull {self.pull} name={STREAM} static;",
            "hls on;",
            f"hls_path {self.outdir};",
            f"hls_fragment {d:g}s;",
            f"hls_playlist_length {10 * d:g}s;",
            "hls_fragment_slicing aligned;",
            "hls_fragment_naming timestamp;",
        ])
        proc = _nginx_proc(self.workdir, self.rtmp_port, conf, f"{self.packager}-{self.label}")
        # replace the placeholder registered by Node.__init__
        self.registry.items = [p for p in self.registry.items if p is not self.proc]
        return self.registry.add(proc)

    def argv(self) -> list[str]:
        return self.proc.argv

    def wait_started(self, timeout: float = 10.0) -> None:
        wait_until(lambda: port_open(self.rtmp_port) or not self.proc.running, timeout,
                   f"{self.name} to listen")
