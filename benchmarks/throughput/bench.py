"""CPU time and peak memory: one ``sidecar serve`` with N streams vs N ``ffmpeg -c copy -f hls``.

Both sides pull the same N live RTMP streams from one local nginx-rtmp server, fed by N
``ffmpeg -re -stream_loop -1 -c copy`` publishers (not counted). For each N the two sides
run one after the other on the same publishers, each for the same wall-clock window after
a warm-up. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.throughput import procs
from benchmarks.throughput.procs import Proc, RssSampler

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks" / "out"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
SIDECAR = "sidecar"
FFMPEG = "ffmpeg"
MIB = 1024.0  # KiB per MiB


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------
# Deadline: every wait in this file checks it
# ------------------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise BenchError(f"benchmark exceeded its overall time budget ({self.seconds:.0f} s)")


def sleep_bounded(seconds: float, deadline: Deadline, step: float = 0.5,
                  alive: list[Proc] | None = None) -> list[Proc]:
    """Sleep ``seconds`` in bounded steps; return the watched processes that died meanwhile."""
    end = time.monotonic() + seconds
    died: list[Proc] = []
    for _ in range(int(seconds / step) + 2):
        deadline.check()
        if alive:
            died = [p for p in alive if not p.alive()]
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(step, left))
    if alive:
        died = [p for p in alive if not p.alive()]
    return died


# ------------------------------------------------------------------------------------------
# Inputs: one cached source file, nginx-rtmp, N looping publishers
# ------------------------------------------------------------------------------------------


def make_source(cache: Path, seconds: int) -> Path:
    """testsrc2 640x360 25 fps H.264 (keyframe every 2 s) + AAC sine, as FLV; cached."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"src-640x360-25fps-g50-aac-{seconds}s.flv"
    if path.is_file() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.flv")
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", str(seconds), "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
           "-b:v", "800k", "-maxrate", "800k", "-bufsize", "1600k",
           "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-ac", "2",
           "-f", "flv", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0 or not tmp.is_file():
        raise BenchError(f"could not generate the source file:\n{res.stderr[-2000:]}")
    tmp.rename(path)
    return path


class Nginx:
    def __init__(self, workdir: Path, logdir: Path) -> None:
        self.workdir = workdir
        self.port = procs.free_port()
        self.error_log = logdir / "nginx-error.log"
        self.logdir = logdir
        self.proc: Proc | None = None

    def url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def start(self, deadline: Deadline) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise BenchError("nginx not found (Debian packages nginx + libnginx-mod-rtmp)")
        if not NGINX_RTMP_MODULE.is_file():
            raise BenchError(f"{NGINX_RTMP_MODULE} missing (Debian package libnginx-mod-rtmp)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text("\n".join([
            f"load_module {NGINX_RTMP_MODULE};",
            "daemon off;",
            "master_process off;",
            "worker_processes 1;",
            f"pid {self.workdir / 'nginx.pid'};",
            f"error_log {self.error_log} info;",
            "events { worker_connections 2048; }",
            "rtmp {",
            "    server {",
            f"        listen 127.0.0.1:{self.port};",
            "        chunk_size 4096;",
            "        application live { live on; record off; }",
            "    }",
            "}",
        ]) + "\n")
        argv = [nginx, "-e", str(self.error_log), "-p", f"{self.workdir}/", "-c", str(conf)]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30,
                               check=False)
        if check.returncode != 0:
            raise BenchError(f"nginx -t failed:\n{check.stderr}")
        self.proc = Proc(argv, self.logdir / "nginx.out", "nginx")
        for _ in range(100):
            deadline.check()
            if not self.proc.alive():
                raise BenchError(f"nginx exited; see {self.error_log}")
            with contextlib.suppress(OSError):
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            time.sleep(0.1)
        raise BenchError("nginx did not open its RTMP port within 10 s")

    def published(self) -> set[str]:
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return set()
        return set(re.findall(r"publish: name='([^']*)'", text))


def start_publishers(nginx: Nginx, source: Path, n: int, cap_s: float, logdir: Path,
                     deadline: Deadline) -> list[Proc]:
    pubs = []
    for i in range(n):
        argv = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "warning", "-re",
                "-stream_loop", "-1", "-i", str(source), "-map", "0", "-c", "copy",
                "-t", f"{cap_s:.0f}", "-f", "flv", nginx.url(f"s{i}")]
        pubs.append(Proc(argv, logdir / f"publisher-s{i}.log", f"publisher-s{i}"))
    want = {f"s{i}" for i in range(n)}
    for _ in range(300):  # <= 30 s
        deadline.check()
        if want <= nginx.published():
            return pubs
        dead = [p.name for p in pubs if not p.alive()]
        if dead:
            raise BenchError(f"publishers exited: {dead[:5]}; see {logdir}")
        time.sleep(0.1)
    missing = sorted(want - nginx.published())
    raise BenchError(f"{len(missing)} publishers never reached nginx: {missing[:5]}")


# ------------------------------------------------------------------------------------------
# The two packagers
# ------------------------------------------------------------------------------------------


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        with contextlib.suppress(Exception):
            return e.code, json.loads(e.read() or b"null")
        return e.code, None
    except (OSError, ValueError):
        return 0, None


def sidecar_argv() -> list[str]:
    """The real console script next to this interpreter (not a pyenv shim), else -m."""
    beside = Path(sys.executable).parent / SIDECAR
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(SIDECAR)
    return [found] if found else [sys.executable, "-m", "sidecar"]


# The sidecar sides: every output (the default: TS + CMAF), and TS only (CMAF off), to show
# what the CMAF muxing costs.
SIDECAR_OUTPUTS = {"sidecar": "ts,cmaf", "sidecar-ts": "ts"}
PACKAGERS = ("sidecar", "sidecar-ts", "ffmpeg")


class SidecarSide:
    def __init__(self, nginx: Nginx, n: int, workdir: Path, logdir: Path,
                 segment_duration: int, label: str = "sidecar") -> None:
        self.label = label
        self.n = n
        self.port = procs.free_port()
        self.datadir = workdir / label
        self.log = logdir / f"{label}.log"
        self.argv = [*sidecar_argv(), "serve", "--node-id", "bench",
                     "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.datadir),
                     "--segment-duration", str(segment_duration), "--log-level", "info",
                     "--outputs", SIDECAR_OUTPUTS[label]]
        for i in range(n):
            self.argv += ["--stream", f"live/s{i}={nginx.url(f's{i}')}"]
        self.procs: list[Proc] = []
        self.last_status: dict[str, Any] | None = None

    def start(self) -> list[Proc]:
        self.procs = [Proc(self.argv, self.log, self.label)]
        return self.procs

    def segments(self) -> dict[str, int] | None:
        """Published segment count per stream from ``/streams`` (None: no answer)."""
        code, body = http_json(f"http://127.0.0.1:{self.port}/streams", timeout=10)
        if code != 200 or not isinstance(body, dict):
            return None
        self.last_status = body
        return {k.split("/", 1)[1]: int(v["status"]["published"]) for k, v in body.items()}

    def extras(self) -> dict[str, Any]:
        code, body = http_json(f"http://127.0.0.1:{self.port}/readyz", timeout=10)
        status = {}
        for key, v in (self.last_status or {}).items():
            st = dict(v.get("status", {}))
            st.pop("events", None)
            status[key] = st
        not_ready = []
        if isinstance(body, dict):
            not_ready = [f"{k}: {v.get('reason')}" for k, v in body.get("streams", {}).items()
                         if not v.get("ready")]
        return {"readyz_status": code, "not_ready": not_ready[:20],
                "not_ready_count": len(not_ready), "stream_status": status}

    def logs(self) -> list[Path]:
        return [self.log]


class FfmpegSide:
    label = "ffmpeg"

    def __init__(self, nginx: Nginx, n: int, workdir: Path, logdir: Path,
                 segment_duration: int, cap_s: float) -> None:
        self.n = n
        self.nginx = nginx
        self.outdir = workdir / "ffmpeg"
        self.logdir = logdir
        self.segment_duration = segment_duration
        self.cap_s = cap_s
        self.procs: list[Proc] = []

    def argv(self, i: int) -> list[str]:
        d = self.outdir / f"s{i}"
        return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "warning",
                "-rtmp_live", "live", "-i", self.nginx.url(f"s{i}"),
                "-map", "0", "-c", "copy", "-t", f"{self.cap_s:.0f}",
                "-f", "hls", "-hls_time", str(self.segment_duration), "-hls_list_size", "10",
                "-hls_flags", "delete_segments", "-hls_segment_filename", str(d / "%d.ts"),
                str(d / "index.m3u8")]

    def start(self) -> list[Proc]:
        for i in range(self.n):
            (self.outdir / f"s{i}").mkdir(parents=True, exist_ok=True)
            self.procs.append(Proc(self.argv(i), self.logdir / f"ffmpeg-hls-s{i}.log",
                                   f"ffmpeg-hls-s{i}"))
        return self.procs

    def segments(self) -> dict[str, int] | None:
        """Segments finished per stream: MEDIA-SEQUENCE + entries of each playlist."""
        out = {}
        for i in range(self.n):
            try:
                text = (self.outdir / f"s{i}" / "index.m3u8").read_text()
            except OSError:
                out[f"s{i}"] = 0
                continue
            m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
            out[f"s{i}"] = (int(m.group(1)) if m else 0) + text.count("#EXTINF")
        return out

    def extras(self) -> dict[str, Any]:
        return {}

    def logs(self) -> list[Path]:
        return [p.log for p in self.procs]


# ------------------------------------------------------------------------------------------
# One measured run
# ------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    n: int
    packager: str
    rep: int
    window_s: float = 0.0
    warmup_s: float = 0.0
    warmup_complete: bool = False
    cpu_s: float = 0.0
    cpu_pct_core: float = 0.0
    peak_rss_mib: float = 0.0
    rss_per_stream_mib: float = 0.0
    rss_window_start_mib: float | None = None
    rss_window_end_mib: float | None = None
    peak_pss_mib: float = 0.0
    pss_per_stream_mib: float = 0.0
    peak_rss_anon_mib: float = 0.0
    vmhwm_sum_mib: float = 0.0
    max_process_peak_rss_mib: float = 0.0
    processes: int = 0
    segments_window: dict[str, int] = field(default_factory=dict)
    segments_total: dict[str, int] = field(default_factory=dict)
    segments_expected_window: float = 0.0
    publishers_nginx_cpu_pct_core: float = 0.0
    machine_busy_pct_all_cores: float = 0.0
    other_cpu_pct_core: float = 0.0
    bench_cpu_pct_core: float = 0.0
    died: list[str] = field(default_factory=list)
    clean_exit: bool = True
    exit_codes: list[int | None] = field(default_factory=list)
    log_levels: dict[str, int] = field(default_factory=dict)
    log_messages: list[tuple[str, int]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_LEVEL_RE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


def summarize_logs(paths: list[Path],
                   sidecar: bool) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Count log lines per level and the most frequent warning/error messages (normalized)."""
    levels: Counter[str] = Counter()
    msgs: Counter[str] = Counter()
    for p in paths:
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if sidecar:
                m = _LEVEL_RE.search(line)
                if "Traceback" in line:
                    levels["TRACEBACK"] += 1
                if not m:
                    continue
                levels[m.group(1)] += 1
                if m.group(1) in ("WARNING", "ERROR", "CRITICAL"):
                    text = line[m.start():]
                else:
                    continue
            else:
                # FLV over RTMP cannot be rewound to patch its header when ffmpeg stops.
                if not line.strip() or "Failed to update header" in line:
                    continue
                levels["LINES"] += 1
                text = line
            text = re.sub(r"\bs\d+\b", "sK", text)
            text = re.sub(r"0x[0-9a-f]+", "0x..", text)
            text = re.sub(r"\d+", "N", text)
            msgs[text[:200]] += 1
    return dict(levels), msgs.most_common(12)


def measure(side: SidecarSide | FfmpegSide, *, n: int, rep: int, window: float,
            warmup_min: float, warmup_max: float, context: list[Proc], segment_duration: int,
            deadline: Deadline) -> RunResult:
    res = RunResult(n=n, packager=side.label, rep=rep,
                    segments_expected_window=window / segment_duration)
    t_start = time.monotonic()
    ps = side.start()
    roots = [p.pid for p in ps]
    sampler = RssSampler({"m": roots}, interval=0.5,
                         max_seconds=warmup_max + window + 120).start()
    try:
        # Warm-up: until every stream has published a segment (bounded by warmup_max).
        segs: dict[str, int] | None = None
        for _ in range(int(warmup_max / 0.5) + 2):
            deadline.check()
            elapsed = time.monotonic() - t_start
            dead = [p.name for p in ps if not p.alive()]
            if dead:
                res.died = dead
                break
            segs = side.segments()
            complete = segs is not None and len(segs) == n and min(segs.values()) >= 1
            if complete and elapsed >= warmup_min:
                res.warmup_complete = True
                break
            if elapsed >= warmup_max:
                break
            time.sleep(0.5)
        res.warmup_s = time.monotonic() - t_start
        if not res.warmup_complete:
            have = sum(1 for v in (segs or {}).values() if v >= 1)
            res.problems.append(f"warm-up ended after {res.warmup_s:.0f} s with only {have}/{n}"
                                " streams having published a segment")

        # Window: CPU snapshots bracket it; segment counts are read just outside them.
        seg0 = side.segments() or {}
        m0 = procs.machine_cpu()
        c0 = procs.cpu_snapshot(roots)
        x0 = procs.cpu_snapshot([p.pid for p in context])
        s0 = procs.cpu_ticks(os.getpid()) or 0  # this process alone (children are above)
        w0 = time.monotonic()
        died = sleep_bounded(window, deadline, step=1.0, alive=ps)
        c1 = procs.cpu_snapshot(roots)
        x1 = procs.cpu_snapshot([p.pid for p in context])
        s1 = procs.cpu_ticks(os.getpid()) or 0
        m1 = procs.machine_cpu()
        w1 = time.monotonic()
        seg1 = side.segments() or {}
        hwm = sum(procs.status_kib(pid, "VmHWM").get("VmHWM", 0)
                  for r in roots for pid in procs.tree(r))
        res.extras = side.extras()
    finally:
        sampler.stop()
        sampler.sample_once(pss=True)
        clean = procs.stop_all(ps, timeout=15.0)
    res.clean_exit = all(clean.values())
    res.exit_codes = [p.returncode for p in ps]
    res.died = sorted(set(res.died) | {p.name for p in died})
    res.window_s = w1 - w0
    res.cpu_s = procs.cpu_seconds_between(c0, c1)
    res.cpu_pct_core = 100.0 * res.cpu_s / res.window_s
    ctx_s = procs.cpu_seconds_between(x0, x1)
    self_s = (s1 - s0) / procs.CLK_TCK
    res.bench_cpu_pct_core = 100.0 * self_s / res.window_s
    res.publishers_nginx_cpu_pct_core = 100.0 * ctx_s / res.window_s
    busy_j, total_j = m1[0] - m0[0], m1[1] - m0[1]
    res.machine_busy_pct_all_cores = 100.0 * busy_j / max(total_j, 1)
    machine_busy_s = busy_j / procs.CLK_TCK  # summed over cores
    res.other_cpu_pct_core = 100.0 * max(0.0, machine_busy_s - res.cpu_s - ctx_s - self_s) \
        / res.window_s
    res.peak_rss_mib = sampler.peak_sum.get("m", 0) / MIB
    res.rss_per_stream_mib = res.peak_rss_mib / n
    res.peak_pss_mib = sampler.peak_pss.get("m", 0) / MIB
    res.pss_per_stream_mib = res.peak_pss_mib / n
    res.peak_rss_anon_mib = sampler.peak_anon.get("m", 0) / MIB
    r0, r1 = sampler.rss_at("m", w0), sampler.rss_at("m", w1 - 0.6)
    res.rss_window_start_mib = None if r0 is None else r0 / MIB
    res.rss_window_end_mib = None if r1 is None else r1 / MIB
    res.vmhwm_sum_mib = hwm / MIB
    res.max_process_peak_rss_mib = max(sampler.peak_proc.values(), default=0) / MIB
    res.processes = len(ps)
    res.segments_total = dict(sorted(seg1.items(), key=lambda kv: int(kv[0][1:])))
    res.segments_window = {k: v - seg0.get(k, 0) for k, v in res.segments_total.items()}
    res.log_levels, res.log_messages = summarize_logs(side.logs(), side.label.startswith("sidecar"))

    if res.died:
        res.problems.append(f"{len(res.died)} process(es) died during the run: {res.died[:5]}")
    if len(seg1) < n:
        res.problems.append(f"segment counts available for only {len(seg1)}/{n} streams")
    zero = [k for k, v in res.segments_window.items() if v <= 0]
    if zero:
        res.problems.append(f"{len(zero)}/{n} streams produced NO segment in the window: "
                            f"{zero[:8]}")
    behind = [k for k, v in res.segments_window.items()
              if 0 < v < res.segments_expected_window - 2]
    if behind:
        res.problems.append(f"{len(behind)}/{n} streams produced fewer than "
                            f"{res.segments_expected_window - 2:.0f} segments in the window")
    if not res.clean_exit:
        # The measurement stands; the process just would not stop. Reported, not hidden.
        res.problems.append("did not exit within 15 s of SIGTERM (SIGKILLed after the "
                            "window; measurements are unaffected)")
    return res


# ------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / MIB / MIB:.1f} GiB"
    try:
        import av
        av_version = av.__version__
    except ImportError:
        av_version = "not installed"
    git = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "sidecar"],
                               capture_output=True, text=True, timeout=20,
                               check=False).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        dirty = ["?"]
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "ffmpeg": first_line([FFMPEG, "-version"]).split(" Copyright")[0],
        "nginx": first_line(["sh", "-c", "nginx -v 2>&1"]),
        "python": platform.python_version(),
        "pyav": av_version,
        "git_commit": git,
        "sidecar_uncommitted": [d.strip() for d in dirty if d.strip()],
        "sidecar_command": " ".join(sidecar_argv()),
    }


def budget_seconds(args: argparse.Namespace, counts: list[int]) -> float:
    per_side = args.warmup_max + args.seconds + 40
    return 300 + args.repeat * sum(40 + 2 * per_side + 5 for _ in counts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(x) for x in args.streams.split(",") if x.strip()]
    if not counts or min(counts) < 1 or max(counts) > 200:
        raise BenchError("--streams: comma-separated counts between 1 and 200")
    deadline = Deadline(budget_seconds(args, counts))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logroot = OUT / "throughput-logs" / stamp
    workroot = OUT / "throughput-work" / stamp
    info = machine_info()
    print(f"source: generating/reusing {args.source_seconds} s test file in {OUT / 'cache'}",
          flush=True)
    source = make_source(OUT / "cache", args.source_seconds)
    nginx = Nginx(workroot / "nginx", logroot)
    nginx.start(deadline)
    results: list[RunResult] = []
    try:
        for n in counts:
            for rep in range(args.repeat):
                logdir = logroot / f"n{n}-r{rep}"
                pub_cap = 30 + 2 * (args.warmup_max + args.seconds + 40)
                print(f"[N={n} rep {rep + 1}/{args.repeat}] starting {n} publishers", flush=True)
                pubs = start_publishers(nginx, source, n, pub_cap, logdir / "publishers",
                                        deadline)
                context = [*pubs, nginx.proc] if nginx.proc else pubs
                try:
                    sleep_bounded(args.settle, deadline)
                    order = list(PACKAGERS) if rep % 2 == 0 else list(reversed(PACKAGERS))
                    for which in order:
                        work = workroot / f"n{n}-r{rep}"
                        side: SidecarSide | FfmpegSide
                        if which in SIDECAR_OUTPUTS:
                            side = SidecarSide(nginx, n, work, logdir, args.segment_duration,
                                               which)
                        else:
                            side = FfmpegSide(nginx, n, work, logdir, args.segment_duration,
                                              cap_s=args.warmup_max + args.seconds + 60)
                        print(f"[N={n} rep {rep + 1}/{args.repeat}] {which}: warm-up "
                              f"(<= {args.warmup_max:.0f} s) + {args.seconds:.0f} s window",
                              flush=True)
                        r = measure(side, n=n, rep=rep, window=args.seconds,
                                    warmup_min=args.warmup_min, warmup_max=args.warmup_max,
                                    context=context, segment_duration=args.segment_duration,
                                    deadline=deadline)
                        results.append(r)
                        seg = sorted(r.segments_window.values()) or [0]
                        print(f"    cpu {r.cpu_s:.1f} s ({r.cpu_pct_core:.0f}% of a core), "
                              f"peak RSS {r.peak_rss_mib:.0f} MiB, segments/stream in window "
                              f"{seg[0]}..{seg[-1]}, machine busy "
                              f"{r.machine_busy_pct_all_cores:.0f}%"
                              + (f"  PROBLEMS: {r.problems}" if r.problems else ""), flush=True)
                        if not args.keep:
                            shutil.rmtree(work / which, ignore_errors=True)
                        sleep_bounded(2.0, deadline)
                finally:
                    procs.stop_all(pubs, timeout=10.0)
                pub_levels, pub_msgs = summarize_logs([p.log for p in pubs], sidecar=False)
                if pub_levels.get("LINES"):
                    print(f"    note: publishers logged {pub_levels['LINES']} warning lines, "
                          f"e.g. {pub_msgs[:2]}", flush=True)
    finally:
        if nginx.proc is not None:
            nginx.proc.stop(10.0)
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    return {"meta": info, "args": vars(args), "logs": str(logroot),
            "runs": [asdict(r) | {"ok": r.ok} for r in results],
            "summary": summarize(results, counts)}


def _median(vals: list[float]) -> float:
    return float(statistics.median(vals)) if vals else float("nan")


def summarize(results: list[RunResult], counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        row: dict[str, Any] = {"n": n}
        for pk in PACKAGERS:
            rs = [r for r in results if r.n == n and r.packager == pk]
            if not rs:
                continue
            seg_all = [v for r in rs for v in r.segments_window.values()] or [0]
            row[pk] = {
                "runs": len(rs),
                "cpu_s": _median([r.cpu_s for r in rs]),
                "window_s": _median([r.window_s for r in rs]),
                "cpu_pct_core": _median([r.cpu_pct_core for r in rs]),
                "cpu_pct_core_per_stream": _median([r.cpu_pct_core / n for r in rs]),
                "peak_rss_mib": _median([r.peak_rss_mib for r in rs]),
                "rss_per_stream_mib": _median([r.rss_per_stream_mib for r in rs]),
                "peak_pss_mib": _median([r.peak_pss_mib for r in rs]),
                "pss_per_stream_mib": _median([r.pss_per_stream_mib for r in rs]),
                "peak_rss_anon_mib": _median([r.peak_rss_anon_mib for r in rs]),
                "warmup_s": _median([r.warmup_s for r in rs]),
                "rss_window_start_mib": _median([r.rss_window_start_mib for r in rs
                                                 if r.rss_window_start_mib is not None]),
                "rss_window_end_mib": _median([r.rss_window_end_mib for r in rs
                                               if r.rss_window_end_mib is not None]),
                "segments_window_min": min(seg_all),
                "segments_window_median": _median([float(v) for v in seg_all]),
                "segments_window_max": max(seg_all),
                "segments_expected_window": rs[0].segments_expected_window,
                "machine_busy_pct_all_cores": _median([r.machine_busy_pct_all_cores
                                                       for r in rs]),
                "publishers_nginx_cpu_pct_core": _median([r.publishers_nginx_cpu_pct_core
                                                          for r in rs]),
                "other_cpu_pct_core": _median([r.other_cpu_pct_core for r in rs]),
                "bench_cpu_pct_core": _median([r.bench_cpu_pct_core for r in rs]),
                "ok": all(r.ok for r in rs),
                "measured_ok": all(r.ok or all("SIGTERM" in p for p in r.problems)
                                   for r in rs),
                "clean_stop": all(r.clean_exit for r in rs),
                "problems": sorted({p for r in rs for p in r.problems}),
            }
        for a, b in (("sidecar", "ffmpeg"), ("sidecar-ts", "ffmpeg"),
                     ("sidecar", "sidecar-ts")):
            if a in row and b in row:
                s, f = row[a], row[b]
                row[f"ratio_{a}_over_{b}".replace("-", "_")] = {
                    "cpu": s["cpu_s"] / f["cpu_s"] if f["cpu_s"] else None,
                    "peak_rss": (s["peak_rss_mib"] / f["peak_rss_mib"]
                                 if f["peak_rss_mib"] else None),
                    "peak_pss": (s["peak_pss_mib"] / f["peak_pss_mib"]
                                 if f["peak_pss_mib"] else None),
                }
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="CPU time and peak RSS of one `sidecar serve` packaging N live RTMP streams "
                    "vs N `ffmpeg -c copy -f hls` processes, same inputs, one run.")
    p.add_argument("--streams", default="1,10,50", help="comma-separated stream counts")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="measurement window per side and N (default 60)")
    p.add_argument("--warmup-min", type=float, default=5.0,
                   help="minimum warm-up before the window (default 5)")
    p.add_argument("--warmup-max", type=float, default=30.0,
                   help="warm-up ends when every stream has a segment, or after this (30)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds between starting publishers and the first side (3)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per N and side; medians are reported (order alternates)")
    p.add_argument("--segment-duration", type=int, default=6)
    p.add_argument("--source-seconds", type=int, default=30, help="length of the looped file")
    p.add_argument("--out", type=Path, default=OUT / "throughput.json", help="JSON output")
    p.add_argument("--keep", action="store_true", help="keep segment/work directories")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.seconds < 5 or args.warmup_max < args.warmup_min:
        p.error("need --repeat >= 1, --seconds >= 5, --warmup-max >= --warmup-min")
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks.throughput.report import render

    args = parse_args(argv)

    def _term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _term)
    try:
        data = run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_everything()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in data["args"].items()}
    args.out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(render(data))
    print(f"JSON: {args.out}\nlogs: {data['logs']}")
    bad = [r for r in data["runs"] if not r["ok"]]
    return 1 if bad else 0
