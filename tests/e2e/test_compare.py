"""`sidecar compare` against real origins: sidecar nodes, ffmpeg packagers, a stale copy.

One pair of sidecar nodes (shared SQLite store, the clock-locked built-in source) serves every
test of this module that needs interchangeable origins; the ffmpeg test builds its own
encoder -> nginx-rtmp -> two `ffmpeg -f hls` packagers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    FfmpegEncoder,
    ManagedProcess,
    NginxRtmp,
    ProcessRegistry,
    PythonHttpServer,
    free_port,
    require_binary,
    wait_for_port,
    wait_until,
)
from tests.e2e.sidecar_node import SidecarNode

pytestmark = pytest.mark.e2e

COMPARE = [sys.executable, "-m", "sidecar", "compare"]


@pytest.fixture(scope="module")
def registry() -> Iterator[ProcessRegistry]:
    reg = ProcessRegistry()
    try:
        yield reg
    finally:
        reg.stop_all()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compare")


@pytest.fixture(scope="module")
def nodes(registry: ProcessRegistry, work: Path) -> list[SidecarNode]:
    """Two sidecar nodes on one store, both listing at least four segments."""
    store = work / "timeline.sqlite3"
    pair = [SidecarNode(n, work, ["live/demo=synthetic:"], store=store, registry=registry)
            for n in ("a", "b")]
    for node in pair:
        node.start()
    try:
        wait_until(lambda: all(len(n.segment_numbers()) >= 4 for n in pair), 40, 0.5,
                   what="four listed segments on both nodes")
    except TimeoutError:
        raise AssertionError("\n".join(n.process.log_tail() for n in pair)) from None
    return pair


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _compare(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMPARE, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _words(text: str) -> str:
    """The report's text without its line wrapping (the width depends on the environment)."""
    return " ".join(text.split())


def test_two_sidecar_nodes_are_interchangeable(nodes: list[SidecarNode], work: Path) -> None:
    a, b = nodes
    hls_json, dash_json, png = work / "hls.json", work / "dash.json", work / "hls.png"
    t0 = time.monotonic()
    runs = [subprocess.Popen([*COMPARE, f"{a.url}/live/demo/playlist.m3u8",
                              f"{b.url}/live/demo/playlist.m3u8", "--duration", "20",
                              "--json", str(hls_json), "--png", str(png)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([*COMPARE, f"{a.url}/live/demo/manifest.mpd",
                              f"{b.url}/live/demo/manifest.mpd", "--duration", "20",
                              "--json", str(dash_json)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outs = [r.communicate(timeout=90) for r in runs]
    print(f"\n{outs[0][0]}\n{outs[1][0]}\n(both runs: {time.monotonic() - t0:.1f} s)")
    for run, (out, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, out + err
        assert "INTERCHANGEABLE (exit 0)" in _words(out) and "hazards none" in _words(out)
    hls, dash = _json(hls_json), _json(dash_json)
    assert hls["kind"] == "hls-multivariant" and dash["kind"] == "dash"
    assert hls["origins"][0]["media_url"] == f"{a.url}/live/demo/src/media.m3u8"
    for report in (hls, dash):
        assert report["exit_code"] == 0 and report["interchangeable"] is True
        assert sum(report["hazards"].values()) == 0 and report["events"] == []
        assert report["first_divergence_s"] is None
        assert report["longest_agreement_s"] >= 19.0
        assert report["instants"] >= 25  # about 4 polls per 2 s target duration
        shares = report["shares"]
        for share in ("in_step", "answered", "served", "segments_identical", "etags_equal",
                      "no_drift"):
            assert shares[share] == 1.0, (share, shares)
        # At a poll that falls between the two nodes' answers a segment boundary passes
        # (milliseconds apart), one node may list the next segment first: "in step".
        assert shares["identical"] >= 0.9, report["pairs"]
        assert report["segments"]["video_drift_ms_max"] == 0.0
        assert report["segments"]["audio_drift_ms_max"] == 0.0
    assert hls["segments"]["compared"] >= 10  # the window at the start and ~9 new segments
    # DASH: video and audio representations plus their init segments, all byte-identical
    names = {c["name"] for c in dash["segment_checks"]}
    assert {"video/init-0.mp4", "audio/init-0.mp4"} <= names
    assert {c["track"] for c in dash["segment_checks"]} == {"video", "audio"}
    assert dash["segments"]["compared"] >= 20
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stale_static_copy_is_not_interchangeable(nodes: list[SidecarNode], work: Path,
                                                  registry: ProcessRegistry) -> None:
    a = nodes[0]
    root = work / "static"
    src = root / "live" / "demo" / "src"
    src.mkdir(parents=True)
    text = a.get("/live/demo/src/media.m3u8").text
    (src / "media.m3u8").write_text(text)
    for name in [ln for ln in text.splitlines() if ln and not ln.startswith("#")]:
        (src / name).write_bytes(a.get(f"/live/demo/src/{name}").content)
    static = PythonHttpServer(root, name="static-copy", registry=registry).start()
    out_json = work / "stale.json"
    res = _compare(f"{a.url}/live/demo/src/media.m3u8",
                   f"{static.url}/live/demo/src/media.m3u8", "--duration", "10",
                   "--json", str(out_json))
    print(res.stdout)
    assert res.returncode == 1, res.stdout + res.stderr
    report = _json(out_json)
    assert report["hazards"]["sequence_backwards"] >= 1
    assert report["hazards"]["missing"] >= 1  # the node's new segments are not on the copy
    missing = [e for e in report["events"] if e["kind"] == "missing"]
    assert all(e["origins"] == [1] and "HTTP 404 on B" in e["detail"] for e in missing)
    assert report["shares"]["segments_identical"] == 1.0  # what both have is the same
    assert report["first_divergence_s"] is not None and report["first_divergence_s"] < 5.0
    assert report["longest_agreement_s"] < 5.0
    assert "NOT INTERCHANGEABLE (exit 1)" in _words(res.stdout)
    assert "sequence_backwards" in res.stdout


def test_interrupt_prints_the_partial_report(nodes: list[SidecarNode], work: Path) -> None:
    a, b = nodes
    out_json = work / "interrupted.json"
    proc = subprocess.Popen([*COMPARE, f"{a.url}/live/demo/src/media.m3u8",
                             f"{b.url}/live/demo/src/media.m3u8", "--duration", "120",
                             "--json", str(out_json)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert "(interrupted: partial report)" in _words(out)
    assert "INTERCHANGEABLE (exit 0)" in _words(out)
    report = _json(out_json)
    assert report["interrupted"] is True and report["duration_s"] < 10.0
    assert report["instants"] >= 3


def _tls_server(workdir: Path, registry: ProcessRegistry) -> int:
    """A Python HTTPS server with a fresh self-signed certificate; returns its port."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1"], capture_output=True, check=True, timeout=60)
    port = free_port()
    script = (
        "import http.server, ssl, sys\n"
        "srv = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
        " http.server.SimpleHTTPRequestHandler)\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
        "ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n"
        "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
        "srv.serve_forever()\n")
    proc = ManagedProcess([sys.executable, "-c", script, str(port), str(cert), str(key)],
                          workdir, name="https-server", cwd=workdir, registry=registry)
    wait_for_port("127.0.0.1", port, process=proc)
    return port


def test_bad_input_is_one_line_and_exit_2(nodes: list[SidecarNode], work: Path,
                                          registry: ProcessRegistry) -> None:
    a = nodes[0]
    good = f"{a.url}/live/demo/playlist.m3u8"
    dead = f"http://127.0.0.1:{free_port()}/live/demo/playlist.m3u8"
    tls = f"https://127.0.0.1:{_tls_server(work / 'tls', registry)}/playlist.m3u8"
    cases = [
        ([good, dead], f"error: {dead}: connection refused"),
        ([good, f"{a.url}/healthz"],
         f"error: {a.url}/healthz: not an HLS playlist or DASH MPD (Content-Type "
         "application/json"),
        ([good, f"{a.url}/live/demo/manifest.mpd"],
         f"error: playlist types differ: {good} is an HLS multivariant playlist, "
         f"{a.url}/live/demo/manifest.mpd is a DASH MPD"),
        ([good, f"{a.url}/live/nope/playlist.m3u8"],
         f"error: {a.url}/live/nope/playlist.m3u8: HTTP 404"),
        ([good, tls], f"error: {tls}: TLS error: [SSL: CERTIFICATE_VERIFY_FAILED]"),
        ([good, tls, "--insecure"], f"error: {tls}: HTTP 404"),  # TLS accepted, no file
        ([good, good, "--variant", "3"], f"error: {good}: 1 variant(s), no variant 3"),
    ]
    for args, expected in cases:
        res = _compare(*args, "--duration", "5")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert len(lines) == 1 and lines[0].startswith(expected), (expected, res.stderr)
        assert res.stdout == ""


def _ffmpeg_hls(src: str, outdir: Path, name: str, registry: ProcessRegistry) -> ManagedProcess:
    """`ffmpeg -f hls` as commonly deployed: its own counter, segments named by wall clock."""
    outdir.mkdir(parents=True)
    argv = [require_binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "warning",
            "-nostats", "-i", src, "-c", "copy", "-f", "hls", "-hls_time", "2",
            "-hls_list_size", "6", "-hls_flags", "temp_file", "-strftime", "1",
            "-hls_segment_filename", str(outdir / "seg-%s.ts"), str(outdir / "index.m3u8")]
    return ManagedProcess(argv, outdir.parent, name=name, registry=registry)


def test_two_independent_ffmpeg_packagers_are_not(procs: ProcessRegistry,
                                                  workdir: Path) -> None:
    nginx = NginxRtmp(workdir / "nginx", registry=procs).start()
    FfmpegEncoder(nginx.rtmp_url("cam"), keyint_seconds=2.0, logdir=workdir,
                  registry=procs).start()
    nginx.wait_for_publisher("cam")
    dirs = [workdir / "hls-1", workdir / "hls-2"]
    _ffmpeg_hls(nginx.rtmp_url("cam"), dirs[0], "packager-1", procs)
    time.sleep(3.5)  # the second origin starts later, as a restarted node would
    _ffmpeg_hls(nginx.rtmp_url("cam"), dirs[1], "packager-2", procs)
    servers = [PythonHttpServer(d, name=f"http-{i}", registry=procs).start()
               for i, d in enumerate(dirs)]

    def listed(i: int) -> int:
        try:
            r = httpx.get(f"{servers[i].url}/index.m3u8", timeout=2)
        except httpx.HTTPError:
            return 0
        return r.text.count("#EXTINF") if r.status_code == 200 else 0

    wait_until(lambda: listed(0) >= 3 and listed(1) >= 2, 30, 0.5, what="both packagers")
    out_json = workdir / "ffmpeg.json"
    res = _compare(f"{servers[0].url}/index.m3u8", f"{servers[1].url}/index.m3u8",
                   "--duration", "12", "--json", str(out_json))
    print(res.stdout)
    assert res.returncode == 1, res.stdout + res.stderr
    report = _json(out_json)
    hz = report["hazards"]
    # one sequence number, two URIs: what makes hls.js >= 1.6 fail fatally behind a balancer
    assert hz["sequence_conflict"] >= 3
    conflict = next(e for e in report["events"] if e["kind"] == "sequence_conflict")
    assert "seg-" in conflict["detail"] and " on A vs seg-" in conflict["detail"]
    assert hz["sequence_backwards"] >= 1  # the later packager is behind in numbers
    # the same media under the same name, with timestamps from each packager's own start
    assert hz["drift"] >= 1 and hz["bytes_differ"] >= 1
    assert report["segments"]["video_drift_ms_max"] > 1000.0
    assert report["segments"]["video_drift_frames_max"] > 25
    assert report["first_divergence_s"] == 0.0
    assert report["shares"]["segments_identical"] == 0.0
    assert "NOT INTERCHANGEABLE (exit 1)" in _words(res.stdout)
    assert "sequence_conflict" in res.stdout and "drift" in res.stdout
