#!/usr/bin/env python3
"""Probe what nginx-rtmp hands to RTMP subscribers (PyAV) — timestamps, keyframes, restarts.

Questions answered (printed as a report at the end):

1. How long does ``av.open`` block on a stream name that has no publisher (with and without
   ``rw_timeout``), and does it succeed if a publisher appears while it waits?
2. A subscriber joining ~3.7 s after the publisher: does it get the publisher's absolute
   timestamps (≈3700 ms) or timestamps restarting from 0?  Is its first video packet a keyframe?
3. The publisher stops (SIGTERM, clean unpublish) for ``--gap`` s (default 5) and publishes again
   (timestamps from 0):
   does a connected subscriber keep its connection, and with which timestamps?  Same for a
   publisher killed with SIGKILL (TCP reset, no unpublish).

Everything runs on 127.0.0.1 with Debian's ffmpeg and nginx + libnginx-mod-rtmp, through the
e2e harness.  Each subscriber is a separate process (fork) running PyAV, so timings are not
distorted by the GIL.  Usage::

    python3 scripts/probe_nginx_timestamps.py [--app-conf 'wait_key on;'] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import FfmpegEncoder, NginxRtmp

Record = dict[str, Any]


def subscriber(
    name: str, url: str, t0: float, out: mp.Queue[Record], options: dict[str, str], max_s: float
) -> None:
    """Child process: open ``url`` with PyAV, demux, and report every packet/event to ``out``."""
    import av

    def emit(event: str, **kw: Any) -> None:
        out.put({"sub": name, "event": event, "t": round(time.time() - t0, 3), **kw})

    emit("open_start", options=options)
    try:
        container = av.open(url, options=options)
    except Exception as exc:
        emit("open_error", error=f"{type(exc).__name__}: {exc}")
        return
    streams = [
        {"index": s.index, "type": s.type, "codec": s.codec_context.name,
         "time_base": str(s.time_base)}
        for s in container.streams
    ]  # fmt: skip
    emit("opened", streams=streams)
    deadline = time.time() + max_s
    n = 0
    try:
        for pkt in container.demux():
            if pkt.size == 0 and pkt.pts is None:
                emit("flush_packet", stream=pkt.stream.type)
                continue
            n += 1
            emit(
                "packet", n=n, stream=pkt.stream.type, pts=pkt.pts, dts=pkt.dts,
                key=bool(pkt.is_keyframe), time_base=str(pkt.time_base), size=pkt.size,
            )  # fmt: skip
            if time.time() > deadline:
                emit("deadline")
                break
        else:
            emit("eof", packets=n)
    except Exception as exc:
        emit("error", error=f"{type(exc).__name__}: {exc}", packets=n)
    finally:
        container.close()


class Probe:
    def __init__(self, workdir: Path, app_conf: str) -> None:
        self.workdir = workdir
        self.nginx = NginxRtmp(workdir / "nginx", extra_app_conf=app_conf)
        self.ctx = mp.get_context("fork")
        self.q: mp.Queue[Record] = self.ctx.Queue()
        self.children: list[mp.process.BaseProcess] = []
        self.records: list[Record] = []
        self.t0 = time.time()

    def spawn(self, name: str, url: str, options: dict[str, str], max_s: float) -> None:
        p = self.ctx.Process(
            target=subscriber, args=(name, url, self.t0, self.q, options, max_s), daemon=True
        )
        p.start()
        self.children.append(p)

    def drain(self, seconds: float) -> None:
        end = time.time() + seconds
        while True:
            remaining = end - time.time()
            if remaining <= 0:
                return
            try:
                self.records.append(self.q.get(timeout=min(0.2, remaining)))
            except queue.Empty:
                pass

    def mark(self, what: str) -> None:
        self.records.append({"sub": "-", "event": what, "t": round(time.time() - self.t0, 3)})
        print(f"[{time.time() - self.t0:7.3f}s] {what}", flush=True)

    def shutdown(self) -> None:
        for p in self.children:
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
        self.nginx.stop()


def fmt_packet(r: Record) -> str:
    return (
        f"  t={r['t']:7.3f}s  {r['stream']:<5} pts={r['pts']!s:>7} dts={r['dts']!s:>7} "
        f"key={'Y' if r['key'] else '-'} tb={r['time_base']} size={r['size']}"
    )


def run(app_conf: str, json_out: Path | None, gap: float = 5.0, rw_timeout_s: float = 5.0) -> int:
    with tempfile.TemporaryDirectory(prefix="probe-nginx-") as tmp:
        workdir = Path(tmp)
        probe = Probe(workdir, app_conf)
        probe.nginx.start()
        url = probe.nginx.rtmp_url("probe")
        enc = FfmpegEncoder(url, keyint_seconds=2.0, fps=25, logdir=workdir, name="publisher")
        opts = {"rw_timeout": str(int(rw_timeout_s * 1_000_000))}
        try:
            # --- 1. av.open on a name without publisher -----------------------------------
            probe.t0 = time.time()
            probe.mark("phase 1: open on unpublished names")
            probe.spawn("nopub_rw5s", probe.nginx.rtmp_url("nobody"), opts, 5)
            probe.spawn("nopub_default", probe.nginx.rtmp_url("nobody2"), {}, 5)
            probe.spawn("late_publisher", probe.nginx.rtmp_url("later"), opts, 3)
            probe.drain(2.0)
            late_enc = FfmpegEncoder(
                probe.nginx.rtmp_url("later"), logdir=workdir, name="late-publisher"
            ).start()
            probe.mark("publisher for 'later' started (t=2s)")
            probe.drain(10.0)
            late_enc.stop()

            # --- 2./3. main timeline --------------------------------------------------------
            probe.t0 = time.time()
            enc.start()
            probe.mark("phase 2: publisher started (T0)")
            probe.spawn("A_t0", url, opts, 60)
            probe.drain(3.7)
            probe.spawn("B_t3.7", url, opts, 60)
            probe.mark("subscriber B started")
            probe.drain(12.0 - 3.7)
            enc.stop()
            probe.mark("publisher stopped with SIGTERM (clean unpublish)")
            probe.drain(gap)
            enc.start()
            probe.mark("publisher restarted (timestamps from 0)")
            probe.drain(5.0)
            probe.spawn("C_after_republish", url, opts, 60)
            probe.mark("subscriber C started")
            probe.drain(5.0)
            enc.kill()
            probe.mark("publisher killed with SIGKILL")
            probe.drain(gap)
            enc.start()
            probe.mark("publisher restarted after SIGKILL")
            probe.drain(8.0)
            enc.stop()
            probe.mark("end")
            probe.drain(3.0)
            print("\n--- nginx error.log tail ---")
            print(probe.nginx.log_tail(30))
            print("--- publisher log ---")
            print(enc.log_tail(10))
        finally:
            enc.kill()
            probe.shutdown()

    report(probe.records)
    if json_out is not None:
        json_out.write_text(json.dumps(probe.records, indent=1))
    return 0


def report(records: list[Record]) -> None:
    subs: dict[str, list[Record]] = {}
    marks = [r for r in records if r["sub"] == "-"]
    for r in records:
        if r["sub"] != "-":
            subs.setdefault(r["sub"], []).append(r)
    print("\n=== timeline marks (seconds since the phase's T0) ===")
    for m in marks:
        print(f"  {m['t']:7.3f}s  {m['event']}")
    for name, recs in subs.items():
        print(f"\n=== subscriber {name} ===")
        pkts = [r for r in recs if r["event"] == "packet"]
        for r in recs:
            if r["event"] in ("open_start", "opened", "open_error", "eof", "error", "deadline"):
                extra = {k: v for k, v in r.items() if k not in ("sub", "event", "t")}
                print(f"  t={r['t']:7.3f}s  {r['event']} {extra if extra else ''}")
        if not pkts:
            continue
        print("  first packets:")
        for r in pkts[:12]:
            print(fmt_packet(r))
        first_video = next((r for r in pkts if r["stream"] == "video"), None)
        if first_video is not None:
            print(
                f"  first video packet: pts={first_video['pts']} key={first_video['key']} "
                f"(arrived t={first_video['t']}s)"
            )
        # timestamp discontinuities per stream
        last: dict[str, Record] = {}
        jumps = 0
        for r in pkts:
            prev = last.get(r["stream"])
            if prev is not None and r["dts"] is not None and prev["dts"] is not None:
                delta = r["dts"] - prev["dts"]
                gap = r["t"] - prev["t"]
                if delta < 0 or delta > 500 or gap > 1.0:
                    jumps += 1
                    print(
                        f"  JUMP {r['stream']}: dts {prev['dts']} -> {r['dts']} (delta {delta}) "
                        f"wall gap {gap:.3f}s at t={r['t']}s; next packets:"
                    )
                    idx = pkts.index(r)
                    for nxt in pkts[idx : idx + 4]:
                        print("    " + fmt_packet(nxt).strip())
            last[r["stream"]] = r
        print(f"  packets: {len(pkts)}, discontinuities: {jumps}, last at t={pkts[-1]['t']}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--app-conf", default="", help="extra nginx-rtmp application directives")
    ap.add_argument("--json", type=Path, default=None, help="write all records as JSON here")
    ap.add_argument("--gap", type=float, default=5.0, help="publisher pause in seconds")
    ap.add_argument("--rw-timeout", type=float, default=5.0, help="subscribers' rw_timeout (s)")
    args = ap.parse_args()
    return run(args.app_conf, args.json, args.gap, args.rw_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
