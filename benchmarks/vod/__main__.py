"""VOD: index time, time to first segment (cold and warm), JIT segment latency, whole-file
packaging, against ``ffmpeg -c copy -f hls`` on the same file.

``python -m benchmarks.vod [--minutes 10] [--out benchmarks/out/vod.json]``
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sidecar.vod.index import IndexCache, build_index
from sidecar.vod.package import Vod, write_package
from sidecar.vod.reader import Source
from sidecar.vod.service import VodService

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / "out" / "cache"
D = 6 * 90_000


def source_file(minutes: int) -> Path:
    """640x360 25 fps H.264 (2 s GOPs, 2 B-frames, 800 kb/s) + AAC, moov at the end."""
    path = CACHE / f"vod-{minutes}min.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.mp4")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(minutes * 60), "-c:v", "libx264", "-preset", "ultrafast",
                        "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2",
                        "-b:v", "800k", "-c:a", "aac", "-b:a", "128k", str(tmp)], check=True)
        tmp.replace(path)
    return path


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "vod.json")
    args = ap.parse_args()
    src = source_file(args.minutes)
    work = Path(tempfile.mkdtemp(prefix="vod-bench-"))
    res: dict[str, object] = {"file": src.name, "bytes": src.stat().st_size,
                              "segment_duration_s": D // 90_000}
    try:
        t = time.perf_counter()
        index = build_index(src)
        res["index_build_ms"] = ms(time.perf_counter() - t)
        res["packets"] = len(index)
        cache = IndexCache(work / "idx")
        cache.get(src)
        t = time.perf_counter()
        IndexCache(work / "idx").get(src)  # a restarted node: from disk
        res["index_load_ms"] = ms(time.perf_counter() - t)
        res["index_disk_bytes"] = sum(p.stat().st_size for p in (work / "idx").rglob("*.npz"))

        rel = src.name
        cold = VodService([src.parent], work / "cold", D, segment_cache_bytes=0)
        t = time.perf_counter()
        cold.get(f"{rel}/playlist.m3u8")
        cold.get(f"{rel}/src/media.m3u8")
        n_segments = len(cold.vod(rel).spans)
        middle = n_segments // 2
        cold.get(f"{rel}/src/{middle}.ts")
        res["cold_first_segment_ms"] = ms(time.perf_counter() - t)
        res["segments"] = n_segments
        rng = random.Random(1)
        for kind, name in (("ts", "src/{n}.ts"), ("cmaf_video", "video/{n}.m4s"),
                           ("cmaf_audio", "audio/{n}.m4s")):
            times = []
            for n in rng.sample(range(n_segments), min(args.samples, n_segments)):
                t = time.perf_counter()
                cold.get(f"{rel}/{name.format(n=n)}")
                times.append(time.perf_counter() - t)
            res[f"warm_{kind}_p50_ms"] = ms(statistics.median(times))
            res[f"warm_{kind}_max_ms"] = ms(max(times))
        cold.close()

        t = time.perf_counter()
        vod = Vod.of(build_index(src), D)
        reader = Source.open(vod.index)
        write_package(vod, reader, work / "package")
        reader.close()
        res["sidecar_package_s"] = round(time.perf_counter() - t, 2)

        out = work / "ffmpeg"
        out.mkdir()
        t = time.perf_counter()
        proc = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-c",
                                 "copy", "-f", "hls", "-hls_time", "6", "-hls_playlist_type",
                                 "vod", str(out / "index.m3u8")])
        first = None
        while proc.poll() is None:
            if first is None and (out / "index1.ts").exists():  # index0.ts is complete
                first = time.perf_counter() - t
            time.sleep(0.005)
        res["ffmpeg_hls_first_segment_ms"] = ms(first) if first is not None else None
        res["ffmpeg_hls_total_s"] = round(time.perf_counter() - t, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
