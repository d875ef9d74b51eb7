"""The cluster promise end to end, through a real load balancer, with real players.

ffmpeg (-re, keyframe every 2 s) -> nginx RTMP -> two sidecar nodes sharing a real Redis ->
HAProxy (round-robin per request, health check on /readyz) -> players: hls.js on the TS
playlist, hls.js on the fMP4 playlist and dash.js on the MPD in headless Chromium, and
FFmpeg's HLS demuxer (TS and fMP4) through the balancer and its DASH demuxer on node B (see
``run_scenario`` for why). In one run: node B starts late; node A is
SIGKILLed and restarted 20 s later; the encoder disconnects for 5 s and republishes from
timestamp 0; Redis is stopped for 30 s and started again. Meanwhile the CMAF manifests are
fetched from both nodes at the same instant and compared, and every CMAF init and media
segment both nodes list is compared byte for byte.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    FfmpegEncoder,
    Haproxy,
    ManagedProcess,
    NginxRtmp,
    ProcessRegistry,
    RedisServer,
    require_binary,
    wait_http,
    wait_until,
)
from tests.e2e.sidecar_node import SidecarNode

pytestmark = pytest.mark.e2e

STREAM = "live/demo"
SEGMENT = "2"


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    events: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.events[name] = time.monotonic() - self.t0

    def sleep_until(self, t: float) -> None:
        time.sleep(max(0.0, t - (time.monotonic() - self.t0)))


def ffprobe_live(url: str, workdir: Path, seconds: float, procs: ProcessRegistry,
                 name: str = "ffprobe-client") -> ManagedProcess:
    """FFmpeg's HLS (or DASH, for an .mpd) demuxer as a player: video packet timestamps, for
    as long as it runs; at ``-v error`` anything else in its log is an error line."""
    ffprobe = require_binary("ffprobe")
    argv = [ffprobe, "-v", "error", "-rw_timeout", "15000000", "-select_streams", "v:0",
            "-show_entries", "packet=pts_time", "-of", "csv=p=0", "-read_intervals",
            f"%+{seconds}", url]
    return ManagedProcess(argv, workdir, name=name, registry=procs)


# The CMAF outputs, fetched directly from the nodes.
CMAF_MANIFESTS = ("manifest.mpd", "cmaf.m3u8", "video/media.m3u8", "audio/media.m3u8")
CMAF_TRACKS = ("video", "audio")


def get_together(nodes: list[SidecarNode], path: str, host: str) -> list[httpx.Response]:
    """Like ``fetch_together``, with one ``Host`` header for every node (the MPD's UTCTiming
    URL is built from it)."""
    def get(n: SidecarNode) -> httpx.Response:
        return httpx.get(n.url + path, headers={"Host": host}, timeout=10)

    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(get, nodes))


@dataclass
class CmafChecks:
    """Manifest equality samples and byte comparisons of CMAF segments between nodes."""

    nodes: list[SidecarNode]
    host: str
    t0: float
    manifest_samples: list[tuple[float, str, bool, str]] = field(default_factory=list)
    """``(t, path, equal, note)``, outside the Redis outage"""
    degraded_samples: list[tuple[float, str, bool, str]] = field(default_factory=list)
    """the same while Redis is down (the promise: no divergence once it returns)"""
    compared: dict[str, int] = field(default_factory=dict)
    """URI -> bytes, for every segment compared (each compared once)."""
    mismatches: list[str] = field(default_factory=list)
    epochs: set[int] = field(default_factory=set)
    phase: str = ""
    """Set while Redis is down: manifest samples then are informational."""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample_manifests(self, rounds: int = 3, pause: float = 0.4) -> None:
        for i in range(rounds):
            if i:
                time.sleep(pause)
            for path in CMAF_MANIFESTS:
                t = self.now()
                ra, rb = get_together(self.nodes, f"/{STREAM}/{path}", self.host)
                equal = ra.status_code == rb.status_code == 200 and ra.text == rb.text
                note = "" if equal else _first_difference(ra, rb)
                (self.degraded_samples if self.phase else self.manifest_samples).append(
                    (t, path, equal, note))

    def compare_segments(self) -> None:
        """Every segment number (and init) both nodes list now and not compared yet."""
        listed: list[dict[int, int]] = []  # per node: number -> epoch
        for r in get_together(self.nodes, f"/{STREAM}/video/media.m3u8", self.host):
            listed.append(_listed_numbers(r.text) if r.status_code == 200 else {})
        common = sorted(set(listed[0]) & set(listed[1]))
        uris = [f"{track}/init-{listed[0][n]}.mp4" for n in common for track in CMAF_TRACKS]
        uris += [f"{track}/{n}.m4s" for n in common for track in CMAF_TRACKS]
        for n in common:
            if listed[0][n] != listed[1][n]:
                self.mismatches.append(f"t={self.now():.1f}s segment {n}: epoch "
                                       f"{listed[0][n]} on A, {listed[1][n]} on B")
            self.epochs.add(listed[0][n])
        for uri in dict.fromkeys(uris):
            if uri in self.compared:
                continue
            ra, rb = get_together(self.nodes, f"/{STREAM}/{uri}", self.host)
            self.compared[uri] = len(ra.content)
            if not (ra.status_code == rb.status_code == 200 and ra.content == rb.content):
                self.mismatches.append(
                    f"t={self.now():.1f}s {uri}: A {ra.status_code} {len(ra.content)} B, "
                    f"B {rb.status_code} {len(rb.content)} B, "
                    f"{'identical' if ra.content == rb.content else 'different'} bytes")

    def equal_share(self) -> float:
        n = len(self.manifest_samples)
        return sum(1 for s in self.manifest_samples if s[2]) / n if n else 0.0


def _listed_numbers(playlist: str) -> dict[int, int]:
    """``{segment number: epoch}`` from an fMP4 media playlist (epoch from ``EXT-X-MAP``)."""
    out: dict[int, int] = {}
    epoch = -1
    for line in playlist.splitlines():
        m = re.match(r'#EXT-X-MAP:URI="init-(\d+)\.mp4"', line)
        if m:
            epoch = int(m.group(1))
        elif re.fullmatch(r"\d+\.m4s", line):
            out[int(line.split(".")[0])] = epoch
    return out


def _first_difference(ra: httpx.Response, rb: httpx.Response) -> str:
    if ra.status_code != rb.status_code or ra.status_code != 200:
        return f"status A {ra.status_code} B {rb.status_code}"
    a, b = ra.text, rb.text
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
             min(len(a), len(b)))
    return f"at char {i}: A {a[max(0, i - 40):i + 40]!r} B {b[max(0, i - 40):i + 40]!r}"


def _cpu_group(comm: str, cmd: str) -> str:
    if "chrom" in comm:
        return "chromium"
    if comm == "node":
        return "node"
    if comm == "ffmpeg":
        return "ffmpeg encoder"
    if comm == "ffprobe":
        return "ffprobe dash" if ".mpd" in cmd else "ffprobe hls"
    if comm.startswith("python") and "-m sidecar" in cmd:
        return "sidecar"
    if comm in ("haproxy", "redis-server", "nginx"):
        return "haproxy/redis/nginx"
    return ""


class CpuMonitor:
    """System CPU use (from /proc/stat) and per-group CPU seconds, sampled every ``every`` s."""

    GROUPS = ("chromium", "node", "sidecar", "ffmpeg encoder", "ffprobe hls", "ffprobe dash",
              "haproxy/redis/nginx")

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[tuple[float, float, float]] = []  # (t, busy fraction, load1)
        self.group_seconds: dict[str, float] = dict.fromkeys(self.GROUPS, 0.0)
        self._last_proc: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CpuMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @staticmethod
    def _stat() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals[:8]) - idle, sum(vals[:8])

    def _procs(self) -> dict[int, tuple[str, float]]:
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            group = _cpu_group(comm, cmd)
            if group:
                out[int(d.name)] = (group, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def _run(self) -> None:
        t0 = time.monotonic()
        busy0, total0 = self._stat()
        self._last_proc = self._procs()
        while not self._stop.wait(self.every):
            busy, total = self._stat()
            load1 = float(Path("/proc/loadavg").read_text().split()[0])
            self.samples.append((time.monotonic() - t0,
                                 (busy - busy0) / max(1, total - total0), load1))
            busy0, total0 = busy, total
            procs = self._procs()
            for pid, (group, secs) in procs.items():
                prev = self._last_proc.get(pid)
                self.group_seconds[group] += secs - (prev[1] if prev else 0.0)
            self._last_proc = procs

    def describe(self) -> str:
        if not self.samples:
            return "cpu: no samples"
        busy = [b for _, b, _ in self.samples]
        load = [x for _, _, x in self.samples]
        saturated = sum(1 for b in busy if b > 0.95)
        hot = [round(t) for t, b, _ in self.samples if b > 0.95]
        groups = ", ".join(f"{g} {s:.0f} s" for g, s in self.group_seconds.items())
        return (f"cpu ({os.cpu_count()} cores): busy mean {sum(busy) / len(busy):.0%} "
                f"max {max(busy):.0%}, {saturated}/{len(busy)} 5-s samples > 95 % (at {hot} s); "
                f"load1 max "
                f"{max(load):.1f}; CPU time: {groups}")


def served_by(url: str, n: int) -> list[str]:
    return [httpx.get(url, timeout=5).headers.get("x-node", "?") for _ in range(n)]


def run_scenario(procs: ProcessRegistry, workdir: Path, *, browser: bool) -> dict[str, object]:
    redis = RedisServer(workdir / "redis", registry=procs).start()
    nginx = NginxRtmp(workdir / "nginx", registry=procs).start()
    enc = FfmpegEncoder(nginx.rtmp_url("demo"), keyint_seconds=2.0, logdir=workdir,
                        registry=procs).start()
    nginx.wait_for_publisher("demo")
    spec = [f"{STREAM}={nginx.rtmp_url('demo')}"]
    nodes = [SidecarNode(n, workdir, spec, store=redis.url, segment_duration=SEGMENT,
                         registry=procs) for n in ("a", "b")]
    a, b = nodes
    lb = Haproxy(workdir / "haproxy", None, [("a", "127.0.0.1", a.port),
                                             ("b", "127.0.0.1", b.port)],
                 redispatch_on_connection_failure=True, registry=procs).start()
    a.start()
    wait_http(f"{a.url}/readyz", timeout=40)
    time.sleep(3.7)
    b.start()
    wait_http(f"{b.url}/readyz", timeout=40)
    lb.wait_server_state("a", "UP")
    lb.wait_server_state("b", "UP")
    media = f"{lb.url}/{STREAM}/src/media.m3u8"
    # Every request is balanced on its own: the node header alternates.
    nodes_seen = served_by(media, 8)
    assert set(nodes_seen) == {"a", "b"} and all(
        x != y for x, y in itertools.pairwise(nodes_seen)), nodes_seen

    total = 170.0
    cpu = CpuMonitor().start()
    tl = Timeline()
    play_url = f"{lb.url}/{STREAM}/playlist.m3u8"
    cmaf_url = f"{lb.url}/{STREAM}/cmaf.m3u8"
    mpd_url = f"{lb.url}/{STREAM}/manifest.mpd"
    probes = {"ts": ffprobe_live(play_url, workdir, total, procs),
              "cmaf": ffprobe_live(cmaf_url, workdir, total, procs, name="ffprobe-cmaf"),
              # FFmpeg 5.1's DASH client reads node B directly: it polls ahead of the live
              # edge without pause, so A's SIGKILL often cuts one of its responses, and
              # after a truncated segment ("Stream ends prematurely") dashdec re-reads the
              # same segment for good (seen in a suite run: HAProxy logged SD-- on A's
              # socket at the kill). Its HLS client and the browsers go through HAProxy.
              "dash": ffprobe_live(f"{b.url}/{STREAM}/manifest.mpd", workdir, total, procs,
                                   name="ffprobe-dash")}
    handles = {}
    if browser:
        from tests.e2e.browser import start_in_browser

        handles["ts"] = start_in_browser(play_url, total, workdir, name="browser-ts",
                                         registry=procs)
        handles["cmaf"] = start_in_browser(cmaf_url, total, workdir, name="browser-cmaf",
                                           registry=procs)
        handles["dash"] = start_in_browser(mpd_url, total, workdir, "dash",
                                           name="browser-dash", registry=procs)
    # Direct fetches from both nodes, with the balancer's Host (as the players send it).
    checks = CmafChecks(nodes, host=lb.url.removeprefix("http://"), t0=tl.t0)

    def sample(at: float, before: float, manifests: bool = True) -> None:
        """Segments (and manifests) from both nodes at ``at`` s, unless it is too late: the
        sample must end before the next event (``before`` s). The window is 20 s and a
        node prunes a segment 12 s after it leaves it, so segments are compared every
        15-20 s; an end-of-run comparison alone would only see the last window."""
        tl.sleep_until(at)
        if time.monotonic() - tl.t0 < before - 5:
            tl.mark(f"sample_{at:g}")
            if manifests:
                checks.sample_manifests()
            checks.compare_segments()

    sample(18, 40, manifests=False)
    sample(30, 40)
    tl.sleep_until(40)
    a.kill()
    tl.mark("a_killed")
    tl.sleep_until(60)
    a.start()
    tl.mark("a_restarted")
    wait_until(lambda: httpx.get(f"{a.url}/readyz", timeout=3).status_code == 200, 40, 0.5,
               what="A ready again")
    tl.mark("a_ready")
    sample(66, 85, manifests=False)  # A's window right after it says it is ready
    sample(75, 85)
    # Redis goes before the encoder does: after an encoder outage hls.js sits about one
    # segment from the live edge (it seeks over the GAP hole as soon as the first segment
    # after it is buffered), and each phase is meant to be tested with a normal buffer.
    tl.sleep_until(85)
    redis.stop()
    tl.mark("redis_stopped")
    checks.phase = "redis down"  # manifest samples now are reported, not required equal
    sample(95, 115, manifests=False)
    sample(103, 115)
    tl.sleep_until(115)
    redis.start()
    tl.mark("redis_started")
    checks.phase = ""
    sample(120, 125)
    tl.sleep_until(125)
    enc.stop()
    tl.mark("encoder_stopped")
    time.sleep(5)
    enc.start()
    tl.mark("encoder_restarted")
    sample(145, total, manifests=False)
    sample(158, total)
    tl.sleep_until(total + 2)
    results = {k: h.result(60) for k, h in handles.items()}
    for p in probes.values():
        p.stop(timeout=5)
    cpu.stop()
    # After the players: everything both nodes list now, byte for byte.
    tl.mark("final_compare")
    checks.compare_segments()
    return {"timeline": tl, "browser": results.get("ts"), "browsers": results,
            "probe": probes["ts"].log_text(),
            "probes": {k: p.log_text() for k, p in probes.items()}, "lb": lb,
            "nodes": nodes, "checks": checks, "cpu": cpu}


def video_times(log: str) -> list[float]:
    out = []
    for line in log.splitlines():
        line = line.strip().rstrip(",")
        if re.fullmatch(r"\d+\.\d+", line):
            out.append(float(line))
    return out


HTTP_LOG = re.compile(r'" (?P<status>\d{3}) .*"GET (?P<path>\S+) HTTP')
MEDIA_PATH = re.compile(r"\.(ts|m4s|mp4|mpd)$|\.m3u8")


def probe_findings(log: str) -> tuple[list[float], list[str]]:
    """Video packet times and every other line (error lines at ``-v error``) of a probe."""
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("=== start")]
    errors = [ln for ln in lines if not re.fullmatch(r"\d+\.\d+,?", ln.strip())]
    return video_times(log), errors


def timestamp_problems(name: str, times: list[float]) -> list[str]:
    """FFmpeg as a player: video timestamps only move forward, one gap (the outage)."""
    out = []
    if len(times) <= 25 * 100:
        out.append(f"ffprobe {name}: only {len(times)} video packets")
    backwards = [(x, y) for x, y in itertools.pairwise(times) if y < x - 0.5]
    if backwards:
        out.append(f"ffprobe {name}: timestamps go back {backwards[:5]}")
    gaps = [(x, y) for x, y in itertools.pairwise(times) if y - x > 1.0]
    if len(gaps) > 1:
        out.append(f"ffprobe {name}: {len(gaps)} gaps {gaps[:5]}")
    return out


def browser_problems(key: str, br: object, tl: Timeline) -> list[str]:
    """Zero fatal errors, only the outage's own events, stalls outside it < 1 s, > 2 min."""
    from tests.e2e.browser import BrowserResult

    assert isinstance(br, BrowserResult)
    if not br.complete:
        return [f"{key}: probe incomplete\n{br.describe()}"]
    shift = tl.wall0 - br.started_at_epoch  # type: ignore[operator]
    outage = (tl.events["encoder_stopped"] + shift, tl.events["encoder_restarted"] + shift + 12)
    allowed = DASH_OUTAGE_EVENTS if br.engine == "dash" else OUTAGE_EVENTS
    out = []
    errors = [e for e in br.errors
              if not _outage_event(e, outage, allowed) and not _startup_nudge(e)]
    if errors or br.fatal_errors:
        out.append(f"{key}: {len(errors)} errors outside the outage, {br.fatal_errors} fatal")
    outside = sum(s["duration"] for s in br.stalls
                  if not (outage[0] - 2 <= s["start"] <= outage[1] + 10))
    if outside >= 1.0:
        out.append(f"{key}: {outside:.2f} s of stalls outside the outage")
    # A stall that begins in the outage must also end soon after it.
    stuck = [s for s in br.stalls
             if outage[0] - 2 <= s["start"] <= outage[1] + 10 and s["end"] > outage[1] + 25]
    if stuck:
        out.append(f"{key}: stalled in the outage and did not recover: "
                   f"{[(round(s.start, 1), round(s.end, 1)) for s in stuck]}")
    if not (br.final_current_time or 0) > 120 or br.current_time_advanced <= 120:
        out.append(f"{key}: played only {br.current_time_advanced:.1f} s "
                   f"(currentTime {br.final_current_time})")
    failed = [e for e in br.http_errors if MEDIA_PATH.search(str(e.get("url", "")))]
    if failed:
        out.append(f"{key}: {len(failed)} failed media requests {failed[:5]}")
    if out:
        out.append(br.describe())
    return out


def test_failover_zero_errors_through_load_balancer(procs: ProcessRegistry,
                                                   workdir: Path) -> None:
    out = run_scenario(procs, workdir, browser=True)
    tl: Timeline = out["timeline"]  # type: ignore[assignment]
    browsers: dict[str, object] = out["browsers"]  # type: ignore[assignment]
    checks: CmafChecks = out["checks"]  # type: ignore[assignment]
    cpu: CpuMonitor = out["cpu"]  # type: ignore[assignment]
    problems: list[str] = []
    report = [f"events {({k: round(v, 1) for k, v in tl.events.items()})}", cpu.describe()]
    # 1. No 404 (or any error status) for a listed segment, init, playlist or MPD, in
    #    HAProxy's log.
    lb: Haproxy = out["lb"]  # type: ignore[assignment]
    statuses = []
    for line in lb.log_text().splitlines():
        m = re.search(r" (\d{3}) \d+ .*\"GET (\S+) HTTP", line)
        if m:
            statuses.append((int(m.group(1)), m.group(2)))
    kinds: dict[str, int] = {}
    for _, path in statuses:
        m = MEDIA_PATH.search(path)
        kinds[m.group(0) if m else "other"] = kinds.get(m.group(0) if m else "other", 0) + 1
    report.append(f"haproxy: {len(statuses)} GETs {kinds}")
    bad = [(s, p) for s, p in statuses if s >= 400 and MEDIA_PATH.search(p)]
    assert statuses, "no request reached HAProxy"
    if bad:
        problems.append(f"{len(bad)} error answers through the load balancer: {bad[:10]}")
    # 2. FFmpeg's clients (HLS TS, HLS fMP4, DASH): no error line, timestamps only move
    #    forward, one gap, at the outage.
    for name, log in out["probes"].items():  # type: ignore[attr-defined]
        times, errors = probe_findings(log)
        if name == "dash":
            # FFmpeg 5.1's dashdec also reads the newest segment again while it polls for
            # the next one (about 100 times each here): the content is judged by its
            # distinct timestamps in the order first seen, the re-reads are reported.
            seen: set[float] = set()
            distinct = [t for t in times if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]
            report.append(f"ffprobe dash: {len(times)} packets read, {len(distinct)} distinct "
                          f"({len(times) / max(1, len(distinct)):.0f} reads each)")
            times = distinct
        gaps = [(round(x, 2), round(y, 2)) for x, y in itertools.pairwise(times) if y - x > 1.0]
        report.append(f"ffprobe {name}: {len(times)} video packets, gaps {gaps}, "
                      f"{len(errors)} error lines")
        if errors:
            problems.append(f"ffprobe {name}: {len(errors)} error lines, first: {errors[:8]}")
        problems += timestamp_problems(name, times)
    # 3. The players in Chromium.
    for key, br in browsers.items():
        report.append(f"{key}: {_browser_summary(br)}")
        problems += browser_problems(key, br, tl)
    # 4. Manifests from both nodes at the same instant; CMAF segments byte for byte.
    share = checks.equal_share()
    unequal = [s for s in checks.manifest_samples if not s[2]]
    report.append(f"manifests equal in {share:.0%} of {len(checks.manifest_samples)} "
                  f"samples; unequal: {[(round(t, 1), p, n) for t, p, _, n in unequal]}")
    degraded = checks.degraded_samples
    report.append(f"while Redis was down (not required): equal "
                  f"{sum(1 for x in degraded if x[2])}/{len(degraded)}; unequal: "
                  f"{[(round(t, 1), p, n) for t, p, e, n in degraded if not e][:4]}")
    if share < 0.8:
        problems.append(f"manifests equal in only {share:.0%} of the samples")
    inits = [u for u in checks.compared if u.endswith(".mp4")]
    media = len(checks.compared) - len(inits)
    report.append(f"compared {len(checks.compared)} CMAF files ({len(inits)} inits: "
                  f"{sorted(inits)}), {sum(checks.compared.values())} bytes; epochs "
                  f"{sorted(checks.epochs)}; mismatches {len(checks.mismatches)}")
    if checks.mismatches:
        problems.append(f"CMAF files differ between nodes: {checks.mismatches[:10]}")
    # About 85 slots in the 170 s, two tracks each; every epoch's two inits.
    if len(checks.epochs) < 2 or media < 120 or len(inits) < 2 * len(checks.epochs):
        problems.append(f"too little compared: epochs {checks.epochs}, {media} media "
                        f"segments, inits {inits}")
    print("\n" + "\n".join(report))
    assert problems == [], "\n".join(problems)


def _browser_summary(br: object) -> str:
    from tests.e2e.browser import BrowserResult

    assert isinstance(br, BrowserResult)
    return (f"{br.engine} {br.engine_version}: complete={br.complete}, "
            f"errors {br.error_counts}, fatal {br.fatal_errors}, stalls "
            f"{[(round(s.start, 1), round(s.duration, 2)) for s in br.stalls]}, "
            f"played {br.current_time_advanced:.1f} s, frags {br.frags_loaded}, "
            f"max frozen {br.max_frozen_seconds:.2f} s")


# What hls.js reports when the input itself stops for 5 s: the buffer runs dry at the live
# edge, the gap entries are skipped, and playback jumps over the hole. Nothing else.
OUTAGE_EVENTS = {"fragGap", "bufferSeekOverHole", "bufferStalledError", "bufferNudgeOnStall"}
# dash.js (5.2.1) reports the same outage (a hole at the end of one Period, a new Period) with
# no ERROR event at all: only playbackWaiting/playbackPlaying, which are stalls, not errors.
DASH_OUTAGE_EVENTS: set[str] = set()


def _startup_nudge(e: Any) -> bool:
    """Seen once in three runs: right after attaching, hls.js finds its start position 0.1 s
    before the first buffered frame and seeks over that hole. It happens before any failover
    and is still to be explained (an open item, not part of the scenario); anything larger,
    later or fatal still fails the test."""
    m = re.search(r"seeking from ([\d.]+) to ([\d.]+)", str(e.get("message", "")))
    t = float(e.get("t", -1))
    return (e.get("fatal") is False and e.get("details") == "bufferSeekOverHole" and t < 3.0
            and m is not None and float(m.group(2)) - float(m.group(1)) <= 0.15)


def _outage_event(e: Any, outage: tuple[float, float],
                  allowed: set[str] = OUTAGE_EVENTS) -> bool:
    t = float(e.get("t", -1))
    return (e.get("fatal") is False and e.get("details") in allowed
            and outage[0] - 2 <= t <= outage[1] + 30)


if __name__ == "__main__":  # a manual dry run without the browser
    import sys
    import tempfile

    reg = ProcessRegistry()
    wd = Path(tempfile.mkdtemp(prefix="cluster-"))
    try:
        res = run_scenario(reg, wd, browser=False)
        print(wd, res["timeline"])
        times = video_times(res["probe"])  # type: ignore[arg-type]
        print("packets", len(times), "gaps",
              [(x, y) for x, y in itertools.pairwise(times) if y - x > 1.0])
        print("backwards", [(x, y) for x, y in itertools.pairwise(times) if y < x])
    finally:
        reg.stop_all()
    sys.exit(0)
