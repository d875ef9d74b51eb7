"""Scenarios and the runner: one encoder, N nodes of every packager, the same stream.

Every scenario starts from scratch (new origin, encoder, store, output directories), runs
the sidecar nodes and both kinds of peers side by side on the same origin stream, applies
the same disturbance to each packager's nodes, and stops every process by PID at the end.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.drift.collect import Collector, Seg
from benchmarks.drift.media import Reference
from benchmarks.drift.metrics import figures
from benchmarks.drift.packagers import (
    Encoder,
    FfmpegHlsNode,
    NginxHlsNode,
    Node,
    Origin,
    Relay,
    SidecarCmafNode,
    SidecarNode,
)
from benchmarks.drift.procs import Registry, require_binary, require_rtmp_module, wait_until

log = logging.getLogger("drift")

PACKAGERS = ("sidecar", "sidecar-cmaf", "ffmpeg-hls", "nginx-hls")
LABELS = "abcde"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    how: str
    late_join: float = 0.0          # node b starts this many seconds after the others
    node_restart: bool = False      # node a: SIGKILL mid-segment, restarted after a gap
    encoder_restart: bool = False   # encoder stopped, back after a gap, timestamps from 0
    jitter_ms: float = 0.0          # per-node delaying relay, delay uniform in [0, J] ms
    clock_skew_ms: int = 0          # sidecar node b's clock is this far ahead
    keyint: float | None = None     # overrides the keyframe interval
    extra_seconds: float = 0.0      # added to --seconds (room for the disturbance)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("identical", "identical feed",
             "all nodes start together on the same origin stream"),
    Scenario("late_join", "node b joins 3.7 s late",
             "node b of every packager is started 3.7 s after the others", late_join=3.7),
    Scenario("node_restart", "node a SIGKILL + restart",
             "node a of every packager gets SIGKILL in the middle of a sidecar slot and is "
             "started again (same command, same directories) after --restart-gap seconds",
             node_restart=True, extra_seconds=12),
    Scenario("encoder_restart", "encoder restart (timestamps from 0)",
             "the encoder is stopped (SIGTERM: clean unpublish) mid-slot and publishes "
             "again 5 s later; the new RTMP session starts at timestamp 0",
             encoder_restart=True, extra_seconds=6),
    Scenario("jitter_50ms", "per-node delivery jitter 50 ms",
             "each node pulls through its own relay process that delays each received "
             "chunk by a uniform random 0-50 ms, order kept", jitter_ms=50),
    Scenario("jitter_200ms", "per-node delivery jitter 200 ms",
             "as jitter_50ms with 0-200 ms", jitter_ms=200),
    Scenario("clock_skew", "clock skew 100 ms on node b",
             "sidecar node b runs with --clock-offset-ms 100; the peers do not use the "
             "wall clock to cut or name segments, so for them this is a control run",
             clock_skew_ms=100),
    Scenario("odd_keyint", "keyframe interval 2.6 s (does not divide 6 s)",
             "the encoder puts a keyframe every 2.6 s (65 frames at 25 fps)", keyint=2.6),
]}


@dataclass
class RunConfig:
    nodes: int = 2
    seconds: float = 54.0
    segment_duration: float = 6.0
    keyint: float = 2.0
    restart_gap: float = 10.0
    encoder_gap: float = 5.0
    tick: float = 1.0               # capture listed segments this often (s)
    sample_interval: float = 0.25   # compare same-instant playlists this often (s)
    packagers: tuple[str, ...] = PACKAGERS
    source: Path | None = None
    sidecar_code: Path | None = None  # a directory holding a ``sidecar`` package to run


@dataclass
class ScenarioResult:
    scenario: Scenario
    records: list[dict[str, Any]]
    boundaries: dict[str, dict[str, list[tuple[float, float]]]]   # packager -> node -> points
    events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def snapshot_sidecar(dest: Path) -> dict[str, Any]:
    """Copy the ``sidecar`` package that this interpreter imports into ``dest/sidecar``.

    Every node of the run then executes the same code, even if the working tree changes
    while the benchmark runs. Returns where it came from: path, git commit and whether the
    package differed from that commit, and a SHA-256 over its files.
    """
    import hashlib
    import subprocess

    import sidecar

    src = Path(sidecar.__file__).resolve().parent
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest / "sidecar", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    h = hashlib.sha256()
    for f in sorted((dest / "sidecar").rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(dest)).encode() + b"\0" + f.read_bytes())
    info: dict[str, Any] = {"path": str(src), "sha256": h.hexdigest()[:16]}

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True,
                                 timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h", "--", ".")  # last commit that changed it
    if commit:
        info["git_commit"] = commit
        info["uncommitted_changes"] = bool(git("status", "--porcelain", "--", "."))
    return info


def check_requirements() -> None:
    """Raise RuntimeError (naming the Debian package) if a real component is missing."""
    require_binary("ffmpeg")
    require_binary("nginx")
    require_rtmp_module()


_LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")
_LOG_SERIOUS = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b|differs from the timeline")


def run_scenario(sc: Scenario, cfg: RunConfig, workroot: Path,
                 echo: Callable[[str], None] = print,
                 evidence: Path | None = None) -> ScenarioResult:
    """Run one scenario with work files under ``workroot/NAME``; small evidence files
    (segments.json, last playlists, log tails) go to ``evidence/NAME``
    (default ``workroot/evidence/NAME``)."""
    check_requirements()
    work = workroot / sc.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    reg = Registry()
    events: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    event_walls: list[tuple[float, str]] = []
    t_begin = time.monotonic()
    seconds = cfg.seconds + sc.extra_seconds
    keyint = sc.keyint or cfg.keyint
    D = cfg.segment_duration
    collector: Collector | None = None
    try:
        origin = Origin(work / "origin", reg)
        origin.start()
        encoder = Encoder(work / "encoder", origin.url, reg, keyint=keyint, source=cfg.source)
        (work / "encoder").mkdir(exist_ok=True)
        nodes: list[Node] = []
        seed = 1
        for packager in cfg.packagers:
            for i in range(cfg.nodes):
                label = LABELS[i]
                nwork = work / packager / label
                url = origin.url
                if sc.jitter_ms:
                    relay = Relay(nwork, origin.port, sc.jitter_ms, seed, "relay", reg)
                    seed += 1
                    relay.start()
                    url = f"rtmp://127.0.0.1:{relay.port}/live/demo"
                if packager in ("sidecar", "sidecar-cmaf"):
                    skew = sc.clock_skew_ms if i == 1 else 0
                    # Each sidecar variant is its own cluster with its own timeline store.
                    kind = SidecarNode if packager == "sidecar" else SidecarCmafNode
                    nodes.append(kind(label, nwork, url, reg,
                                      store=work / f"timeline-{packager}.sqlite3",
                                      segment_duration=D, clock_offset_ms=skew,
                                      code=cfg.sidecar_code))
                elif packager == "ffmpeg-hls":
                    nodes.append(FfmpegHlsNode(label, nwork, url, reg, segment_duration=D))
                else:
                    nodes.append(NginxHlsNode(label, nwork, url, reg, segment_duration=D))
        encoder.start()
        wait_until(lambda: origin.publishes() >= 1 or not encoder.proc.running, 15,
                   "the encoder to publish to the origin")
        if not encoder.proc.running:
            raise RuntimeError(f"encoder exited:\n{encoder.proc.log_tail()}")
        time.sleep(0.5)

        # -- schedule ----------------------------------------------------------------
        t0 = time.monotonic()
        schedule: list[tuple[float, str, Callable[[], None]]] = []
        firsts = [n for n in nodes if n.label != "b" or not sc.late_join]
        lates = [n for n in nodes if n not in firsts]
        for n in firsts:
            n.start()
        if lates:
            schedule.append((sc.late_join, "start node b of every packager",
                             lambda: _each(lates, Node.start)))
        if sc.node_restart:
            t_kill = seconds * 0.3 + D / 2
            victims = [n for n in nodes if n.label == "a"]
            schedule.append((t_kill, "SIGKILL node a of every packager",
                             lambda: _each(victims, Node.kill)))
            schedule.append((t_kill + cfg.restart_gap, "restart node a of every packager",
                             lambda: _each(victims, Node.start)))
        if sc.encoder_restart:
            t_stop = seconds * 0.35 + D / 2
            schedule.append((t_stop, "stop the encoder (SIGTERM)", encoder.stop))
            schedule.append((t_stop + cfg.encoder_gap, "start the encoder again (from 0)",
                             encoder.start))
        schedule.sort(key=lambda e: e[0])

        collector = Collector(nodes)
        next_sample = next_capture = 0.0
        sampler = random.Random(7)
        max_iter = 2 * int(seconds / cfg.sample_interval) + len(schedule) + 20
        for _ in range(max_iter):
            now = time.monotonic() - t0
            if now >= seconds:
                break
            while schedule and schedule[0][0] <= now:
                _at, what, action = schedule.pop(0)
                action()
                event_walls.append((time.time(), what))
                events.append(f"t={now:5.1f}s {what}")
                echo(f"    t={now:5.1f}s {what}")
            if now >= next_sample:
                capture = now >= next_capture
                if capture:
                    for n in nodes:
                        if n.supervise():
                            msg = f"t={now:5.1f}s {n.name} exited by itself; restarted"
                            events.append(msg)
                            echo(f"    {msg}")
                    while next_capture <= now:
                        next_capture += cfg.tick
                collector.tick(capture=capture)
                # Random spacing (mean sample_interval): segment boundaries recur with a
                # fixed period, so evenly spaced samples would always hit the same phase.
                while next_sample <= time.monotonic() - t0:
                    next_sample += cfg.sample_interval * sampler.uniform(0.4, 1.6)
            upcoming = min([next_sample, seconds] + [e[0] for e in schedule[:1]])
            time.sleep(max(0.005, min(1.0, upcoming - (time.monotonic() - t0))))
    finally:
        if collector is not None:
            collector.close()
        reg.stop_all()

    # -- analysis -----------------------------------------------------------------------
    ref = Reference.load(encoder.sessions)
    if ref.frames == 0:
        problems.append("reference: no video frame read from the encoder's FLV files")
    if ref.duplicates:
        notes.append(f"reference: {ref.duplicates} pictures occur twice within one encoder "
                     "session; told apart by the time their segment was first seen")
    records: list[dict[str, Any]] = []
    dump: list[dict[str, Any]] = []
    boundaries: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for packager in cfg.packagers:
        pnodes = [n for n in nodes if n.packager == packager]
        segs: list[Seg] = []
        for n in pnodes:
            segs.extend(collector.logs[n.name].segs)
        for s in segs:
            occ = ref.locate(s.media.first_frame, s.seen_wall)
            if occ is not None:
                s.start_ms, s.session = occ.timeline_ms, occ.session
        f = figures(segs, D * 1000, ref.frame_ms)
        pl = collector.playlists[packager]
        published = {n.label: len(collector.logs[n.name].segs) for n in pnodes}
        rec: dict[str, Any] = {
            "scenario": sc.name,
            "packager": packager,
            "segments": f.segments,
            "identical_names": f.identical_names,
            "identical_sequence": f.identical_sequence,
            "identical_bytes": f.identical_bytes,
            "playlists_equal": round(pl.equal / pl.samples, 4) if pl.samples else None,
            "drift_ms_max": f.drift_ms_max,
            "drift_ms_median": f.drift_ms_median,
            "drift_frames_max": f.drift_frames_max,
            "drift_frames_median": f.drift_frames_median,
            "playlist_samples": pl.samples,
            "playlist_samples_partial": pl.partial,
            "published_per_node": published,
            "name_collisions": f.name_collisions,
            "rewritten_in_place": sum(collector.logs[n.name].rewritten for n in pnodes),
            "seen_changing_in_place": sum(collector.logs[n.name].changing for n in pnodes),
            "segment_wait_ms_max": round(max(collector.logs[n.name].fetch_ms_max
                                             for n in pnodes), 1),
            "unidentified": f.unidentified,
            "fetch_failures": sum(collector.logs[n.name].fetch_failures for n in pnodes),
            "unexpected_exits": sum(n.restarts for n in pnodes),
            "frame_ms": round(ref.frame_ms, 3),
        }
        records.append(rec)
        dump.extend(_seg_dict(s) for s in sorted(segs, key=lambda s: (s.node, s.seen_wall)))
        boundaries[packager] = f.boundaries
        for n in pnodes:
            for msg in collector.logs[n.name].failures:
                problems.append(f"{n.name}: {msg}")
        for ex in pl.examples:  # the sidecar promises equal playlists; the peers do not
            (problems if packager == "sidecar" else notes).append(
                f"{packager}: playlists differ at {ex}")
        if packager == "sidecar":
            for n in pnodes:
                text = n.proc.log_path.read_text(errors="replace") if n.proc.log_path.exists() \
                    else ""
                lines = [ln.strip() for ln in text.splitlines() if _LOG_PROBLEM.search(ln)]
                for ln in lines[:12]:
                    (problems if _LOG_SERIOUS.search(ln) else notes).append(f"{n.name} log: {ln}")
                if len(lines) > 12:
                    notes.append(f"{n.name} log: ... {len(lines) - 12} more warning lines")
    # Where in the sidecar's segments did the disturbances land? The encoder timeline starts
    # when the encoder process was started (its first packet follows within ~0.5 s).
    side = sorted({(s["start_ms"], s["uri"]) for s in dump
                   if s["packager"] == "sidecar" and s["start_ms"] is not None})
    if side and encoder.sessions:
        for wall, what in event_walls:
            if not what.startswith(("SIGKILL", "stop")):
                continue
            t_ms = (wall - encoder.sessions[0][0]) * 1000
            for k, (st, uri) in enumerate(side):
                end = st + D * 1000
                if k + 1 < len(side):
                    end = min(end + 1000, side[k + 1][0])  # a segment may run a little long
                if st <= t_ms < end:
                    events.append(f"{what}: {(t_ms - st) / 1000:.1f} s (±0.5) into sidecar "
                                  f"segment {uri} (encoder time {t_ms / 1000:.1f} s)")
                    break
            else:
                events.append(f"{what}: encoder time {t_ms / 1000:.1f} s, in no sidecar "
                              "segment")
    _keep_evidence((evidence or workroot / "evidence") / sc.name, nodes, collector, dump, reg)
    return ScenarioResult(sc, records, boundaries, events, problems,
                          time.monotonic() - t_begin, dump, notes)


def _keep_evidence(dest: Path, nodes: list[Node], collector: Collector,
                   dump: list[dict[str, Any]], reg: Registry) -> None:
    """Small files kept after the work directory is removed: every captured segment's
    description, each node's last playlist, and the tail of every process log."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "segments.json").write_text(json.dumps(dump, indent=0) + "\n")
    for n in nodes:
        if n.name in collector.last_text:
            name = f"{n.packager}-{n.label}.m3u8"
            (dest / name).write_text(collector.last_text[n.name])
    for i, proc in enumerate(reg.items):
        try:
            lines = proc.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        tail = lines[-400:]
        if len(lines) > 400:
            tail.insert(0, f"[... {len(lines) - 400} earlier lines left out]")
        name = proc.name
        if name == "relay":  # work/SCENARIO/PACKAGER/NODE/relay.log
            name = f"relay-{proc.log_path.parent.parent.name}-{proc.log_path.parent.name}"
        (dest / f"{i:02d}-{name}.log").write_text("\n".join(tail) + "\n")
    for n in nodes:  # nginx keeps its own error.log
        err = n.workdir / "error.log"
        if err.exists():
            lines = err.read_text(errors="replace").splitlines()[-400:]
            (dest / f"{n.packager}-{n.label}-error.log").write_text("\n".join(lines) + "\n")


def _each(nodes: list[Node], action: Callable[[Node], None]) -> None:
    for n in nodes:
        action(n)


def _seg_dict(s: Seg) -> dict[str, Any]:
    return {"packager": s.packager, "node": s.node, "uri": s.uri, "seq": s.seq,
            "version": s.version, "sha256": s.sha256[:16], "size": s.size,
            "seen": round(s.seen_wall, 3), "start_ms": s.start_ms, "session": s.session,
            "first_frame": s.media.first_frame, "keyframe_first": s.media.keyframe_first,
            "video_frames": s.media.video_frames}
