"""The ``sidecar`` command: ``serve`` a node, run the two-node ``demo``."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from sidecar import __version__
from sidecar.clock import Clock, SyncedClock, SystemClock
from sidecar.errors import SidecarError
from sidecar.grid import TICKS_PER_SECOND
from sidecar.node import Node, build_runtime
from sidecar.server import create_app, sync_clock
from sidecar.settings import Settings, StreamSpec, load_settings
from sidecar.store import open_store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Segment-synchronizing HLS/DASH packager sidecar.")

DEFAULT_STREAM = "live/demo=synthetic:"


def package_version() -> str:
    """The installed distribution's version (``__version__`` when not installed)."""
    try:
        return importlib.metadata.version("hls-sidecar")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sidecar {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Segment-synchronizing HLS/DASH packager sidecar."""


def build_node(settings: Settings, clock: Clock | None = None) -> Node:
    """Wire store, sources and pipelines for every configured stream."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store, settings.data_dir)
    if clock is None:
        host = SystemClock(settings.clock_offset_ms * TICKS_PER_SECOND // 1000)
        # With a store that keeps time (Redis), every node runs on the store's clock.
        clock = SyncedClock(host) if hasattr(store, "time") else host
    streams = {spec.key: build_runtime(settings, spec, store, clock)
               for spec in settings.streams}
    node = Node(settings, store, clock, streams)
    sync_clock(node)  # before any pipeline stamps a packet
    return node


def _setup_logging(level: str, node: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format=f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # peer fetches are not news


@app.command()
def serve(
    node_id: Annotated[str | None, typer.Option(
        help="This node's name (default: hostname).")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT for HTTP.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Segments and the local store.")] = None,
    segment_duration: Annotated[str | None, typer.Option(help="Seconds per segment.")] = None,
    window: Annotated[int | None, typer.Option(help="Segments per live playlist.")] = None,
    stream: Annotated[list[str] | None, typer.Option(
        help="APP/NAME=INPUT, repeatable. INPUT: rtmp://, rtmp://..?listen=1, udp://, "
             "tcp://, http(s)://, a file path (?loop=1), synthetic:")] = None,
    store: Annotated[str | None, typer.Option(
        help="Timeline store: a SQLite path (default DATA_DIR/timeline.sqlite3) or "
             "redis://")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the same keys.")] = None,
    publish_delay: Annotated[str | None, typer.Option(
        help="Seconds after the first node publishes a segment before playlists list it.")] = None,
    clock_offset_ms: Annotated[int | None, typer.Option(
        help="Skew this node's clock (testing).")] = None,
    advertise_url: Annotated[str | None, typer.Option(help="URL peers use to reach us.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    outputs: Annotated[str | None, typer.Option(
        help="Outputs for every stream: ts (MPEG-TS HLS), cmaf (fMP4 HLS + DASH); "
             "default ts,cmaf.")] = None,
    stream_outputs: Annotated[list[str] | None, typer.Option(
        help="APP/NAME=OUTPUTS, repeatable: this stream's outputs instead of --outputs.")] = None,
    vod_root: Annotated[list[str] | None, typer.Option(
        help="DIR: video files served under /vod/; NAME=DIR: under /NAME/ (repeatable; "
             "roots of one name are searched in order).")
    ] = None,
    vod_segment_duration: Annotated[str | None, typer.Option(
        help="Seconds per VOD segment (default: --segment-duration).")] = None,
    token_secret: Annotated[str | None, typer.Option(
        help="Shared secret: playlists, MPDs and segments need a playback token.")] = None,
    token_scheme: Annotated[str | None, typer.Option(
        help="wowza (SecureToken v2, default) or hmac (?expires=&token=).")] = None,
    token_prefix: Annotated[str | None, typer.Option(
        help="SecureToken query parameter prefix (default wowzatoken).")] = None,
    token_hash: Annotated[str | None, typer.Option(
        help="SecureToken hash: sha256 (default), sha384, sha512.")] = None,
    token_include_ip: Annotated[bool | None, typer.Option(
        "--token-include-ip", help="The client IP is part of the token.")] = None,
    discovery_callbacks: Annotated[bool | None, typer.Option(
        "--discovery-callbacks", help="Serve nginx-rtmp/SRS publish callbacks under "
        "/discovery/ (start and stop streams as publishers come and go).")] = None,
    discovery_secret: Annotated[str | None, typer.Option(
        help="Secret the callbacks must carry (?secret= or X-Sidecar-Secret).")] = None,
    discovery_allow: Annotated[list[str] | None, typer.Option(
        help="Address or network allowed to call the callbacks, repeatable "
             "(default loopback).")] = None,
    discovery_app: Annotated[list[str] | None, typer.Option(
        help="Application discovered, repeatable (default live).")] = None,
    discovery_input: Annotated[str | None, typer.Option(
        help="Input of a stream a callback announces (default "
             "rtmp://127.0.0.1:1935/{app}/{name}).")] = None,
    discovery_linger: Annotated[float | None, typer.Option(
        help="Seconds a stopped stream stays servable (default window x duration).")] = None,
    wowza_rest: Annotated[str | None, typer.Option(
        help="Wowza Streaming Engine REST API to poll, e.g. http://wse:8087.")] = None,
    wowza_user: Annotated[str | None, typer.Option(help="Wowza REST user.")] = None,
    wowza_password: Annotated[str | None, typer.Option(help="Wowza REST password.")] = None,
    wowza_input: Annotated[str | None, typer.Option(
        help="Input of a Wowza stream (default rtmp://WSE-HOST:1935/{app}/{name}).")] = None,
    wowza_poll: Annotated[float | None, typer.Option(
        help="Seconds between Wowza REST polls (default 5).")] = None,
) -> None:
    """Package live streams and video files into grid-aligned HLS and DASH, serve over HTTP."""
    try:
        settings = load_settings(
            config, node_id=node_id, listen=listen, data_dir=data_dir,
            segment_duration=segment_duration, window=window, streams=stream or None,
            store=store, publish_delay=publish_delay, clock_offset_ms=clock_offset_ms,
            advertise_url=advertise_url, log_level=log_level, outputs=outputs,
            stream_outputs=stream_outputs or None, vod_roots=vod_root or None,
            vod_segment_duration=vod_segment_duration, token_secret=token_secret,
            token_scheme=token_scheme, token_prefix=token_prefix, token_hash=token_hash,
            token_include_ip=token_include_ip, discovery_callbacks=discovery_callbacks,
            discovery_secret=discovery_secret, discovery_allow=discovery_allow or None,
            discovery_apps=discovery_app or None, discovery_input=discovery_input,
            discovery_linger=discovery_linger, wowza_rest=wowza_rest, wowza_user=wowza_user,
            wowza_password=wowza_password, wowza_input=wowza_input, wowza_poll=wowza_poll)
        discovers = settings.discovery_callbacks or settings.wowza_rest
        if not settings.streams and not settings.vod_roots and not discovers:
            settings.streams = [StreamSpec.parse(DEFAULT_STREAM)]
        _setup_logging(settings.log_level, settings.node_id)
        node = build_node(settings)
    except SidecarError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    log = logging.getLogger("sidecar")
    for key, rt in node.streams.items():
        base = f"http://{settings.listen}/{key}"
        urls = ([f"{base}/playlist.m3u8"] if "ts" in rt.pipeline.cfg.outputs else []) + (
            [f"{base}/cmaf.m3u8", f"{base}/manifest.mpd"]
            if "cmaf" in rt.pipeline.cfg.outputs else [])
        log.info("stream %s <- %s: %s", key, " | ".join(rt.spec.inputs), " ".join(urls))
    for root in settings.vod_roots:
        log.info("vod: files under %s at http://%s/%s/{file}/playlist.m3u8 (also cmaf.m3u8, "
                 "manifest.mpd)", root.path, settings.listen, root.app)
    uvicorn.run(create_app(node), host=settings.host, port=settings.port,
                log_level="warning", access_log=False)


@app.command()
def demo(
    base_port: Annotated[int, typer.Option(help="Node a listens here, node b on +1.")] = 8081,
    data_dir: Annotated[Path, typer.Option(help="Where both nodes keep data.")] = Path(
        "./sidecar-demo"),
    segment_duration: Annotated[str, typer.Option(help="Seconds per segment.")] = "4",
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0,
) -> None:
    """Two nodes, one shared local store, the built-in test source: compare their playlists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = data_dir / "timeline.sqlite3"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, node in enumerate(("a", "b")):
            port = base_port + i
            cmd = [sys.executable, "-m", "sidecar", "serve", "--node-id", node,
                   "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir / node),
                   "--store", str(store), "--segment-duration", segment_duration,
                   "--stream", DEFAULT_STREAM]
            procs.append(subprocess.Popen(cmd))
            base = f"http://127.0.0.1:{port}/live/demo"
            typer.echo(f"node {node}: {base}/playlist.m3u8 (HLS, TS)  {base}/cmaf.m3u8 "
                       f"(HLS, fMP4)  {base}/manifest.mpd (DASH)")
            if i == 0:
                time.sleep(3.7)  # b joins late, as in the cluster promise
        typer.echo("Play either URL (ffplay, VLC, hls.js); the two nodes serve the same "
                   "playlists and byte-identical segments. Ctrl-C stops.")
        deadline = time.monotonic() + duration if duration else None
        while all(p.poll() is None for p in procs):
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    bad = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    if bad:
        raise typer.Exit(1)


@app.command()
def package(
    input_file: Annotated[Path, typer.Argument(metavar="INPUT",
                                               help="Media file: MP4, MKV, MPEG-TS, ...")],
    outdir: Annotated[Path, typer.Argument(help="Directory for playlists, MPD, segments.")],
    segment_duration: Annotated[str, typer.Option(help="Seconds per segment.")] = "6",
) -> None:
    """Write a file's VOD package (HLS TS, HLS fMP4, DASH): the bytes /vod/ serves."""
    from sidecar.vod.command import package_command

    code = package_command(input_file, outdir, segment_duration)
    if code:
        raise typer.Exit(code)


@app.command()
def compare(
    urls: Annotated[list[str], typer.Argument(
        help="Two or more URLs of the same stream on different origins: HLS multivariant or "
             "media playlists, or DASH MPDs (live or VOD).")],
    duration: Annotated[float, typer.Option(
        help="Seconds to compare; Ctrl-C stops early and prints the partial report.")] = 120.0,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the whole run (every poll, event and segment) as JSON.")] = None,
    png: Annotated[Path | None, typer.Option(
        help="Write a PNG of each origin's boundary offset over time with divergences "
             "marked. Needs matplotlib (in the test extras, or pip install "
             "matplotlib).")] = None,
    header: Annotated[list[str] | None, typer.Option(
        help="'Name: value' sent with every request, repeatable (tokens).")] = None,
    query: Annotated[list[str] | None, typer.Option(
        help="'name=value' added to every request URL, repeatable (tokens).")] = None,
    max_rps: Annotated[float, typer.Option(
        help="Requests per second, all origins together.")] = 10.0,
    max_kbps: Annotated[float, typer.Option(
        help="Segment download bandwidth, kbit/s, all origins together.")] = 8000.0,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 5.0,
    polls_per_target: Annotated[float, typer.Option(
        help="Polls per target duration, at random instants.")] = 4.0,
    variant: Annotated[int, typer.Option(
        help="Which variant of a multivariant playlist to follow (0: the first).")] = 0,
    insecure: Annotated[bool, typer.Option(help="Do not verify TLS certificates.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the random poll instants.")] = None,
) -> None:
    """Poll origins at the same instants: are they interchangeable behind a round-robin
    balancer? Exit 0: yes, for the whole run; 1: no; 2: the run could not be made."""
    from sidecar.compare import CompareConfig, CompareError, execute, parse_header, parse_query

    try:
        cfg = CompareConfig(
            urls=tuple(urls), duration=duration,
            headers=tuple(parse_header(h) for h in header or ()),
            query=tuple(parse_query(q) for q in query or ()), timeout=timeout,
            max_rps=max_rps, max_kbps=max_kbps, polls_per_target=polls_per_target,
            variant=variant, verify_tls=not insecure, seed=seed)
    except CompareError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if len(urls) < 2 or min(duration, max_rps, max_kbps, timeout, polls_per_target) <= 0:
        typer.echo("error: give two or more URLs and positive numbers", err=True)
        raise typer.Exit(2)
    raise typer.Exit(execute(cfg, json_path, png))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()

__all__ = ["app", "build_node"]
