"""``sidecar package``: the files on disk equal the JIT answers and FFmpeg reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.vod import vod_media
from sidecar.vod.command import package_command
from sidecar.vod.service import VodService

D_SECONDS = "2"
D = 180_000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return vod_media(tmp_path_factory.mktemp("vod-package"))


def run_package(source: Path, outdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", "package", str(source), str(outdir),
                           "--segment-duration", D_SECONDS, *extra],
                          capture_output=True, text=True, timeout=120)


def files_under(outdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("name", ["mp4", "mkv", "ts", "audio.m4a", "audio.mp3"])
def test_package_writes_the_jit_bytes(tmp_path: Path, media: dict[str, Path],
                                      name: str) -> None:
    source = media[name]
    outdir = tmp_path / "out"
    done = run_package(source, outdir)
    assert done.returncode == 0, done.stderr
    # Not a terminal: plain log lines with the progress and a summary.
    assert "segments" in done.stderr and f"{source.name}: " in done.stderr
    written = files_under(outdir)
    service = VodService([source.parent], tmp_path / "cache", D)
    for rel, body in written.items():
        assert service.get(f"{source.name}/{rel}").body == body, rel
    expected = {"playlist.m3u8", "src/media.m3u8", "src/0.ts", "src/1.ts", "src/2.ts"}
    if name != "audio.mp3":
        expected |= {"cmaf.m3u8", "manifest.mpd", "audio/media.m3u8", "audio/init-0.mp4",
                     "audio/0.m4s", "audio/2.m4s"}
    if not name.startswith("audio"):
        expected |= {"video/media.m3u8", "video/init-0.mp4", "video/0.m4s", "video/2.m4s"}
    assert expected <= written.keys()
    assert not [k for k in written if k.startswith(("video", "audio", "cmaf", "manifest"))
                and name == "audio.mp3"]
    service.close()


@pytest.mark.parametrize(("entry", "streams"), [
    ("playlist.m3u8", {"h264", "aac"}),
    ("cmaf.m3u8", {"h264", "aac"}),
    ("manifest.mpd", {"h264", "aac"}),
])
def test_ffmpeg_plays_the_package_without_errors(tmp_path: Path, media: dict[str, Path],
                                                 entry: str, streams: set[str]) -> None:
    outdir = tmp_path / "out"
    assert run_package(media["mp4"], outdir).returncode == 0
    target = str((outdir / entry).resolve())  # FFmpeg's DASH demuxer wants absolute paths
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name:format=duration", "-of", "csv=p=0", target],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    found = {line.split(",")[0] for line in probe.stdout.split() if line[0].isalpha()}
    assert found == streams
    decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", target, "-f", "null",
                             "-"], capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr


def test_package_refuses_what_it_cannot_package(tmp_path: Path, media: dict[str, Path]) -> None:
    done = run_package(media["text.mp4"], tmp_path / "out")
    assert done.returncode == 2 and "text.mp4: not a media file" in done.stderr
    assert not (tmp_path / "out").exists()
    bad = run_package(media["mp4"], tmp_path / "out", "--segment-duration", "0.00001")
    assert bad.returncode == 2 and "90 kHz ticks" in bad.stderr


def test_package_with_a_progress_bar(tmp_path: Path, media: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert package_command(media["mkv"], tmp_path / "out", D_SECONDS, tty=True) == 0
    assert (tmp_path / "out" / "src" / "2.ts").exists()
    assert "3/3" in capsys.readouterr().err  # rich renders the bar with its count
