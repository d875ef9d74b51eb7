"""Input kinds and bad input, end to end with real processes."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import av
import pytest

from fixtures.media import make_clip
from tests.e2e.harness import (
    FfmpegEncoder,
    ManagedProcess,
    ProcessRegistry,
    free_port,
    require_binary,
    wait_until,
)
from tests.e2e.sidecar_node import SidecarNode
from tests.e2e.test_live_core import decode_all

pytestmark = pytest.mark.e2e


def _segments(node: SidecarNode, stream: str) -> list[int]:
    return node.segment_numbers(stream)


def udp_encoder(port: int, workdir: Path, procs: ProcessRegistry, codec_args: list[str], *,
                sample_rate: int) -> ManagedProcess:
    """ffmpeg -re sending test video (H.264, keyframe every 2 s) and a tone as MPEG-TS/UDP."""
    return ManagedProcess(
        [require_binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate={sample_rate}", "-c:v", "libx264", "-preset",
         "ultrafast", "-g", "50", "-sc_threshold", "0", *codec_args, "-f", "mpegts",
         f"udp://127.0.0.1:{port}?pkt_size=1316"], workdir, name="udp-encoder", registry=procs)


def test_mpegts_over_udp_with_b_frames(procs: ProcessRegistry, workdir: Path) -> None:
    port = free_port()
    node = SidecarNode("a", workdir, [f"live/udp=udp://127.0.0.1:{port}"],
                       registry=procs).start()
    udp_encoder(port, workdir, procs, ["-bf", "2", "-keyint_min", "50", "-c:a", "aac"],
                sample_rate=48_000)
    wait_until(lambda: len(_segments(node, "live/udp")) >= 3, 60, 0.5, what="3 UDP segments")
    for n in _segments(node, "live/udp"):
        frames, samples = decode_all(node.get(f"/live/udp/src/{n}.ts").content)
        assert frames >= 45 and samples > 0
    # CMAF from MPEG-TS input: Annex B video with B-frames, AAC in ADTS. Each track's init +
    # its media segments decode, every frame, with presentation times that never go back.
    cmaf = node.get("/live/udp/video/media.m3u8").text
    numbers = [int(line.split(".")[0]) for line in cmaf.splitlines() if line.endswith(".m4s")]
    assert len(numbers) >= 3
    for kind in ("video", "audio"):
        blob = node.get(f"/live/udp/{kind}/init-0.mp4").content + b"".join(
            node.get(f"/live/udp/{kind}/{n}.m4s").content for n in numbers)
        with av.open(io.BytesIO(blob), format="mp4") as c:
            frames = list(c.decode(c.streams[0]))
        times = [f.pts for f in frames]
        assert times == sorted(times) and len(set(times)) == len(times), kind
        if kind == "video":
            assert len(frames) >= 45 * len(numbers)
        else:
            assert sum(f.samples for f in frames) >= 48_000 * len(numbers)


def test_mp3_audio_keeps_ts_and_says_why_there_is_no_cmaf(procs: ProcessRegistry,
                                                          workdir: Path) -> None:
    port = free_port()
    node = SidecarNode("a", workdir, [f"live/mp3=udp://127.0.0.1:{port}"],
                       registry=procs).start()
    udp_encoder(port, workdir, procs, ["-c:a", "libmp3lame"], sample_rate=44_100)
    wait_until(lambda: len(_segments(node, "live/mp3")) >= 2, 60, 0.5, what="2 TS segments")
    for n in _segments(node, "live/mp3"):  # the MP3 audio is in the TS output
        frames, samples = decode_all(node.get(f"/live/mp3/src/{n}.ts").content)
        assert frames >= 45 and samples >= 44_100
    reason = "mp3 audio cannot be packaged as CMAF"
    for path in ("/live/mp3/cmaf.m3u8", "/live/mp3/manifest.mpd", "/live/mp3/video/media.m3u8"):
        r = node.get(path)
        assert r.status_code == 404 and reason in r.json()["error"], (path, r.text)
    status = node.get("/streams").json()["live/mp3"]["status"]
    assert reason in status["cmaf_error"]
    assert node.log_text().count("no CMAF output for this epoch") == 1  # once per epoch


def test_rtmp_listen_push_target(procs: ProcessRegistry, workdir: Path) -> None:
    port = free_port()
    node = SidecarNode("a", workdir, [f"live/push=rtmp://127.0.0.1:{port}/live/push?listen=1"],
                       registry=procs).start()
    time.sleep(1.0)
    FfmpegEncoder(f"rtmp://127.0.0.1:{port}/live/push", logdir=workdir, registry=procs).start()
    wait_until(lambda: len(_segments(node, "live/push")) >= 3, 60, 0.5,
               what="3 segments pushed over RTMP")


def test_looped_file_keeps_one_epoch(procs: ProcessRegistry, workdir: Path) -> None:
    clip = make_clip(workdir / "clip.mp4", seconds=4)
    node = SidecarNode("a", workdir, [f"files/clip={clip}?loop=1"], registry=procs).start()
    wait_until(lambda: len(_segments(node, "files/clip")) >= 7, 60, 0.5, what="7 segments")
    text = node.get("/files/clip/src/media.m3u8").text
    assert "#EXT-X-DISCONTINUITY\n" not in text  # the loop continues the timeline
    assert "#EXT-X-GAP" not in text


def test_garbage_on_ingest_port_is_logged_and_other_streams_keep_going(
        procs: ProcessRegistry, workdir: Path) -> None:
    port = free_port()
    node = SidecarNode("a", workdir, ["live/ok=synthetic:?size=320x180",
                                      f"live/bad=tcp://127.0.0.1:{port}?listen=1"],
                       registry=procs, extra=["--log-level", "info"]).start()
    wait_until(lambda: len(_segments(node, "live/ok")) >= 2, 60, 0.5, what="live/ok segments")
    for _ in range(3):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 200)
        except OSError:
            pass
        time.sleep(1.5)
    wait_until(lambda: "stream live/bad: input" in node.log_text(), 30, 0.5,
               what="a log line naming the bad stream")
    before = max(_segments(node, "live/ok"))
    wait_until(lambda: max(_segments(node, "live/ok")) >= before + 2, 30, 0.5,
               what="live/ok still publishing")
    assert node.get("/healthz").status_code == 200
    assert node.get("/live/bad/src/media.m3u8").status_code == 404
    # The stream recovers when a real encoder connects.
    ffmpeg = require_binary("ffmpeg")
    ManagedProcess([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
                    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "50", "-sc_threshold", "0", "-f", "mpegts",
                    f"tcp://127.0.0.1:{port}"], workdir, name="tcp-encoder", registry=procs)
    wait_until(lambda: len(_segments(node, "live/bad")) >= 2, 60, 0.5,
               what="live/bad recovered")
