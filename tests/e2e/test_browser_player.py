"""The browser player probe (hls.js / dash.js in Debian's headless Chromium) against live HLS and
DASH streams that our sidecar did NOT produce (FFmpeg's own hls/dash muxers), so a failure here
is the probe's fault.

About 50 s in all: hls.js ~9 s until FFmpeg has listed four segments + 15 s of playback
(+ ~2 s browser start/stop), a ~6 s run against a playlist URL that answers 404, and ~20 s of
dash.js against FFmpeg's dash muxer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.browser import (
    CorsHttpServer,
    check_browser_requirements,
    play_in_browser,
    start_in_browser,
)
from tests.e2e.harness import ManagedProcess, ProcessRegistry, require_binary, wait_until

pytestmark = pytest.mark.e2e


def _start_ffmpeg_hls(out: Path, workdir: Path, procs: ProcessRegistry) -> ManagedProcess:
    """FFmpeg's hls muxer: live playlist of 6 x 2 s segments (testsrc2 + sine, -re)."""
    ffmpeg = require_binary("ffmpeg")
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50",
        "-c:a", "aac",
        "-t", "120",  # bounded even if it outlived the test
        "-f", "hls", "-hls_time", "2", "-hls_list_size", "6", "-hls_flags", "delete_segments",
        str(out / "index.m3u8"),
    ]  # fmt: skip
    return ManagedProcess(argv, workdir, name="ffmpeg-hls", registry=procs)


def _start_ffmpeg_dash(out: Path, workdir: Path, procs: ProcessRegistry) -> ManagedProcess:
    """FFmpeg's dash muxer: dynamic MPD, 2 s segments, SegmentTemplate with a timeline."""
    ffmpeg = require_binary("ffmpeg")
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50",
        "-c:a", "aac",
        "-t", "120",
        "-f", "dash", "-seg_duration", "2", "-window_size", "6", "-extra_window_size", "3",
        "-use_template", "1", "-use_timeline", "1",
        str(out / "index.mpd"),
    ]  # fmt: skip
    return ManagedProcess(argv, workdir, name="ffmpeg-dash", registry=procs)


def _listed_segments(playlist: Path) -> int:
    try:
        return playlist.read_text().count("#EXTINF")
    except FileNotFoundError:
        return 0


def test_requirements_fail_loudly() -> None:
    assert check_browser_requirements().endswith("node")
    with pytest.raises(RuntimeError, match=r"scripts/setup\.sh"):
        check_browser_requirements(chromium="/nonexistent/chromium")


def test_hlsjs_plays_ffmpeg_live_hls_without_errors(procs: ProcessRegistry, workdir: Path) -> None:
    out = workdir / "hls"
    enc = _start_ffmpeg_hls(out, workdir, procs)
    server = CorsHttpServer(out, registry=procs).start()
    # hls.js starts 3 target durations before the live edge.  With fewer than 4 segments listed
    # that is segment 0, whose media starts ~0.12 s after 0 (encoder delay): hls.js then seeks
    # over the hole and reports a (non-fatal) bufferSeekOverHole ERROR.  Start later.
    wait_until(
        lambda: _listed_segments(out / "index.m3u8") >= 4 or not enc.running,
        timeout=25,
        what="ffmpeg to list 4 HLS segments",
    )
    assert enc.running, enc.log_tail()

    result = play_in_browser(f"{server.url}/index.m3u8", seconds=15, workdir=workdir)
    print(result.describe())

    assert result.hlsjs_version == "1.7.4", result.describe()
    assert result.errors == [], result.describe()
    assert result.fatal_errors == 0, result.describe()
    assert result.started_playing_at is not None, result.describe()
    assert result.frags_loaded >= 3, result.describe()
    assert result.levels_loaded >= 3, result.describe()  # the live playlist was reloaded
    assert result.current_time_advanced >= 8.0, result.describe()
    assert result.total_stall_seconds < 2.0, result.describe()
    assert result.max_time_backwards == 0.0, result.describe()
    assert result.complete, result.describe()
    # Playback covered the run: ~4 samples per second over 15 s.
    assert len(result.time_samples) >= 50, result.describe()
    # Live playlists of FFmpeg's muxer slide forward: media sequence never decreases.
    seqs = [lvl["media_sequence"] for lvl in result.levels]
    assert seqs == sorted(seqs), seqs
    assert enc.running, enc.log_tail()


def test_probe_reports_fatal_error_for_missing_playlist(
    procs: ProcessRegistry, workdir: Path
) -> None:
    server = CorsHttpServer(workdir / "empty", registry=procs).start()
    url = f"{server.url}/live/missing/index.m3u8"

    player = start_in_browser(url, seconds=5, workdir=workdir, registry=procs)
    result = player.result(timeout=60)
    print(result.describe())

    assert result.complete, result.describe()
    assert result.fatal_errors >= 1, result.describe()
    first = result.errors[0]
    assert first.fatal, result.describe()
    assert first.type == "networkError", result.describe()
    assert first.details == "manifestLoadError", result.describe()
    assert first.response_code == 404, result.describe()
    assert first.url == url, result.describe()
    assert result.started_playing_at is None, result.describe()
    assert result.frags_loaded == 0, result.describe()
    assert any(h["status"] == 404 and h["url"] == url for h in result.http_errors), (
        result.describe()
    )
    assert not player.running


def test_dashjs_plays_ffmpeg_live_dash(procs: ProcessRegistry, workdir: Path) -> None:
    out = workdir / "dash"
    enc = _start_ffmpeg_dash(out, workdir, procs)
    server = CorsHttpServer(out, registry=procs).start()
    wait_until(
        lambda: len(list(out.glob("chunk-stream0-*.m4s"))) >= 4 or not enc.running,
        timeout=25,
        what="ffmpeg to write 4 DASH video segments",
    )
    assert enc.running, enc.log_tail()

    # FFmpeg's MPD says suggestedPresentationDelay = one segment (PT2S); with that dash.js
    # defaults play so close to the live edge that it stalls for ~2-3 s per 10 s (measured).
    # Three segments behind, like hls.js's default, it plays without stalls.
    result = play_in_browser(
        f"{server.url}/index.mpd", seconds=10, workdir=workdir, engine="dash", dash_live_delay=6.0
    )
    print(result.describe())

    assert result.engine_version == "5.2.1", result.describe()
    assert result.complete, result.describe()
    # No clock-sync error either: the probe serves dash.js a local time source instead of
    # https://time.akamai.com (the default when the MPD has no UTCTiming).
    assert result.errors == [], result.describe()
    assert result.http_errors == [], result.describe()
    assert result.frags_loaded >= 4, result.describe()  # audio and video segments
    assert result.levels_loaded >= 2, result.describe()  # the dynamic MPD was reloaded
    assert result.current_time_advanced >= 5.0, result.describe()
    assert result.total_stall_seconds < 2.0, result.describe()
