"""VOD through a round-robin load balancer with real ``sidecar serve`` processes.

Two nodes (``sidecar serve --vod-root``, no live stream), each with its own copy of the same
two-rendition title (different mtimes and inodes), behind HAProxy balancing every request on
its own. hls.js on the TS playlist, hls.js on the fMP4 playlist and dash.js on the MPD play
the title's ``.urlset`` group in headless Chromium, all three at once; node A is SIGKILLed
while they play. Then A is started again (its index is on disk now), and every file that
``sidecar package`` writes for each rendition must equal, byte for byte, what both nodes
answer for the same URL, as must the group's manifests and segments between the nodes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import m3u8
import pytest

from fixtures.vod import make_title
from tests.e2e.harness import Haproxy, ProcessRegistry, wait_http
from tests.e2e.sidecar_node import SidecarNode
from tests.e2e.vod_client import crawl

pytestmark = pytest.mark.e2e

SECONDS = 60  # the title; hls.js and dash.js buffer 30 s ahead, so they fetch past the kill
D = "2"  # seconds per VOD segment
PLAY = SECONDS + 8  # each player runs this long (starting Chromium takes a few seconds)
KILL_AFTER = 20.0  # s at most after the players were started (Chromium's start-up)
RENDITIONS = ((640, 360), (320, 180))
GROUP = "title/,title_360p.mp4,title_180p.mp4,.urlset"

# HAProxy's httplog line (``log stdout format raw``): client [accept date] frontend
# backend/server timers status bytes cookies termination connection-counts (the last one
# the retries, "+" when redispatched) queues "request".
HTTP_LOG = re.compile(r"\[(?P<date>[^\]]+)\] \S+ \S+/(?P<server>\S+) \S+ (?P<status>-?\d+) "
                      r"(?P<bytes>\d+) \S+ \S+ (?P<term>\S{4}) (?P<conns>[\d/+]+) \S+ "
                      r"\"(?P<method>[A-Z]+) (?P<path>\S+) HTTP")


@dataclass(frozen=True)
class LogLine:
    at: float
    """accept time, Unix seconds"""
    server: str
    status: int
    size: int
    termination: str
    retries: str
    path: str


def haproxy_requests(log: str) -> list[LogLine]:
    out = []
    for line in log.splitlines():
        m = HTTP_LOG.search(line)
        if m:
            at = dt.datetime.strptime(m["date"], "%d/%b/%Y:%H:%M:%S.%f").timestamp()
            out.append(LogLine(at, m["server"], int(m["status"]), int(m["bytes"]), m["term"],
                               m["conns"].rsplit("/", 1)[-1], m["path"]))
    return out


def startup_seek(e: object) -> bool:
    """hls.js's one seek at start-up over the hole before the first frame: the title's first
    video frame is presented at +0.08 s (the shift of two B-frames, the same on every node
    and in ``sidecar package``), and hls.js steps 0.1 s past a hole's end. FFmpeg's own
    ``-f hls`` output of the same file gets the same seek (checked by hand: 2 of 3 plays
    in hls.js 1.7.4, with its default 1.4 s offset, with none and with 5 s), so it is the
    player's, not the packaging's. Non-fatal, in the first seconds, from 0 to at most 0.25 s;
    anything else still fails."""
    m = re.search(r"seeking from ([\d.]+) to ([\d.]+)", str(getattr(e, "message", "")))
    return (getattr(e, "fatal", True) is False and getattr(e, "details", "") == "bufferSeekOverHole"
            and float(getattr(e, "t", 99)) < 3.0 and m is not None
            and float(m.group(1)) == 0.0 and float(m.group(2)) <= 0.25)


def player_problems(key: str, br: object, kill_at: float, duration: float) -> list[str]:
    """Zero errors of any kind (player events, media element, page, failed requests),
    followed to the end, and played to within 1.5 s of the end."""
    from tests.e2e.browser import BrowserResult

    assert isinstance(br, BrowserResult)
    out = []
    if not br.complete:
        out.append(f"{key}: probe incomplete")
    errors = [e for e in br.errors if not startup_seek(e)]
    if errors or br.fatal_errors:
        out.append(f"{key}: {len(errors)} player errors ({br.fatal_errors} fatal): "
                   f"{[(e.t, e.details, e.response_code, e.url) for e in errors][:8]}")
    if br.video_errors:
        out.append(f"{key}: media element errors {br.video_errors}")
    if br.http_errors:
        out.append(f"{key}: failed requests {br.http_errors[:8]}")
    if br.console_errors:
        out.append(f"{key}: console errors {br.console_errors[:8]}")
    final = br.final_current_time or 0.0
    if final < duration - 1.5:
        out.append(f"{key}: played to {final:.1f} s of {duration:.1f} s")
    # Every player had asked for its manifest when A died (the kill waits for that); how
    # far each had loaded differs from run to run (hls.js loads the small title within a
    # second or two), so requests after the kill are checked over all players at once.
    if out:
        out.append(br.describe())
    return out


def summary(br: object) -> str:
    from tests.e2e.browser import BrowserResult

    assert isinstance(br, BrowserResult)
    return (f"{br.engine} {br.engine_version}: started {br.started_playing_at} s, played to "
            f"{br.final_current_time} s, {br.frags_loaded} fragments, "
            f"errors {br.error_counts}, stalls "
            f"{[(round(s.start, 1), round(s.duration, 2)) for s in br.stalls]}")


def package(src: Path, outdir: Path, logdir: Path) -> dict[str, bytes]:
    """``sidecar package`` as a user runs it: relative path -> bytes of every file."""
    run = subprocess.run([sys.executable, "-m", "sidecar", "package", str(src), str(outdir),
                          "--segment-duration", D], capture_output=True, text=True,
                         timeout=120, check=False)
    (logdir / f"package-{src.stem}.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr
    return {p.relative_to(outdir).as_posix(): p.read_bytes()
            for p in sorted(outdir.rglob("*")) if p.is_file()}


def test_vod_title_plays_through_the_balancer_while_a_node_dies(procs: ProcessRegistry,
                                                                 workdir: Path) -> None:
    from tests.e2e.browser import start_in_browser

    media = make_title(workdir / "media", "title", SECONDS, RENDITIONS)
    nodes = []
    for name, mtime in (("a", 1_500_000_000), ("b", 1_650_000_000)):
        root = workdir / f"root-{name}"
        (root / "title").mkdir(parents=True)
        for f in media:
            shutil.copy(f, root / "title" / f.name)
            os.utime(root / "title" / f.name, (mtime, mtime))
        nodes.append(SidecarNode(name, workdir, [], registry=procs,
                                 extra=["--vod-root", str(root), "--vod-segment-duration", D]))
    a, b = nodes
    assert os.stat(workdir / "root-a/title/title_360p.mp4").st_ino != os.stat(
        workdir / "root-b/title/title_360p.mp4").st_ino
    for n in nodes:
        n.start()
        wait_http(f"{n.url}/readyz", timeout=20)
    lb = Haproxy(workdir / "haproxy", None, [("a", "127.0.0.1", a.port),
                                             ("b", "127.0.0.1", b.port)],
                 redispatch_on_connection_failure=True, registry=procs).start()
    lb.wait_server_state("a", "UP")
    lb.wait_server_state("b", "UP")
    entry = f"{lb.url}/vod/{GROUP}"
    served = [httpx.get(f"{entry}/playlist.m3u8", timeout=30).headers["x-node"]
              for _ in range(4)]
    assert served in (["a", "b"] * 2, ["b", "a"] * 2), served  # every request on its own
    text = httpx.get(f"{entry}/0/src/media.m3u8", timeout=30).text
    duration = sum(s.duration for s in m3u8.loads(text).segments)
    assert abs(duration - SECONDS) < 0.2, text

    # -- the players, all three at once; A dies while they play ----------------------
    players = {
        "hls-ts": start_in_browser(f"{entry}/playlist.m3u8", PLAY, workdir, "hls",
                                   name="browser-ts", registry=procs),
        "hls-fmp4": start_in_browser(f"{entry}/cmaf.m3u8", PLAY, workdir, "hls",
                                     name="browser-fmp4", registry=procs),
        "dash": start_in_browser(f"{entry}/manifest.mpd", PLAY, workdir, "dash",
                                 name="browser-dash", registry=procs),
    }
    # Kill A while all three are loading: once each has asked for its manifest and the
    # first segments are out. hls.js loads TS far faster than real time (it buffers as
    # far as 60 MB allow), so a kill seconds later may find it done with the whole title.
    def loading() -> bool:
        paths = [r.path for r in haproxy_requests(lb.log_text())]
        return (all(any(p.endswith(f"/{m}") for p in paths)
                    for m in ("playlist.m3u8", "cmaf.m3u8", "manifest.mpd"))
                and sum(p.endswith(".ts") for p in paths) >= 2
                and sum(p.endswith(".m4s") for p in paths) >= 4)

    for _ in range(int(KILL_AFTER / 0.05)):
        if loading():
            break
        time.sleep(0.05)
    a.kill()
    killed_wall = time.time()
    results = {k: p.result() for k, p in players.items()}
    requests = haproxy_requests(lb.log_text())

    # -- A again (its index is on disk), then package output against both nodes -----
    a.start()
    wait_http(f"{a.url}/readyz", timeout=20)
    compared = 0
    mismatches: list[str] = []
    with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url,
                                                                      timeout=60) as cb:
        for f in media:
            files = package(f, workdir / "package" / f.stem, workdir)
            assert {"playlist.m3u8", "cmaf.m3u8", "manifest.mpd", "src/media.m3u8",
                    "video/init-0.mp4", "audio/init-0.mp4"} <= files.keys(), sorted(files)
            assert sum(name.endswith(".ts") for name in files) == SECONDS // int(D)
            for name, body in files.items():
                for label, client in (("a", ca), ("b", cb)):
                    r = client.get(f"/vod/title/{f.name}/{name}")
                    compared += 1
                    if r.status_code != 200 or r.content != body:
                        mismatches.append(f"{label} {f.name}/{name}: {r.status_code}, "
                                          f"{len(r.content)} B vs {len(body)} B packaged")
        group_a = crawl(ca, f"/vod/{GROUP}")
        group_b = crawl(cb, f"/vod/{GROUP}")
    assert group_a.keys() == group_b.keys()
    differ = [url for url, body in group_a.items() if group_b[url] != body]

    # -- verdicts ---------------------------------------------------------------------
    problems: list[str] = []
    report = []
    for key, br in results.items():
        kill_at = killed_wall - (br.started_at_epoch or killed_wall)
        report.append(f"{key}: {summary(br)}; A killed at {kill_at:.1f} s")
        problems += player_problems(key, br, kill_at, duration)
    media_requests = [r for r in requests if r.path.startswith("/vod/")]
    retried = [r for r in media_requests if r.retries != "0"]
    bad = [r for r in media_requests if r.status >= 400 or r.status < 0]
    cut = [r for r in media_requests if r.termination[:2] != "--"]
    segments = [r for r in media_requests if r.path.endswith((".ts", ".m4s"))]
    late = [r for r in segments if r.at > killed_wall]
    report.append(f"haproxy: {len(media_requests)} VOD GETs ({len(segments)} segments, "
                  f"{len(late)} after the kill: by {sorted({r.server for r in late})}), "
                  f"statuses {sorted({r.status for r in media_requests})}, terminations "
                  f"{sorted({r.termination for r in media_requests})}, retried on the "
                  f"other node: {[(round(r.at - killed_wall, 2), r.path) for r in retried]}")
    if bad:
        problems.append(f"{len(bad)} error answers through the balancer: {bad[:10]}")
    if cut:
        problems.append(f"{len(cut)} responses not ended normally: {cut[:10]}")
    if len(late) < 10:
        problems.append(f"only {len(late)} segment requests after the kill")
    report.append(f"package vs nodes: {compared} answers compared, {len(mismatches)} differ; "
                  f"group on A vs B: {len(group_a)} URLs, {len(differ)} differ")
    if mismatches:
        problems.append(f"sidecar package output differs from the server: {mismatches[:10]}")
    if differ:
        problems.append(f"the group differs between the nodes: {differ[:10]}")
    print("\n" + "\n".join(report))
    assert problems == [], "\n".join(problems + report)
