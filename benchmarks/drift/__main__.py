"""``python -m benchmarks.drift``: the alignment-drift benchmark (see README.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from benchmarks.drift.report import (
    machine_info,
    plot,
    table,
    write_boundaries,
    write_json,
    write_markdown,
)
from benchmarks.drift.scenarios import (
    PACKAGERS,
    SCENARIOS,
    RunConfig,
    ScenarioResult,
    check_requirements,
    run_scenario,
    snapshot_sidecar,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "out" / "drift"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.drift",
        description="Segment alignment across packager nodes: the sidecar and its peers "
                    "(FFmpeg -f hls, nginx-rtmp HLS) on the same encoder stream, same run.")
    p.add_argument("--nodes", type=int, default=2, help="nodes per packager, 2 to 5 (2)")
    p.add_argument("--scenarios", default="all",
                   help=f"'all' or a comma list of: {', '.join(SCENARIOS)}")
    p.add_argument("--seconds", type=float, default=54.0,
                   help="measured seconds per scenario; restart scenarios add a little (54)")
    p.add_argument("--segment-duration", type=float, default=6.0, help="seconds (6)")
    p.add_argument("--keyint", type=float, default=2.0,
                   help="encoder keyframe interval, seconds (2; odd_keyint uses 2.6)")
    p.add_argument("--restart-gap", type=float, default=10.0,
                   help="node_restart: seconds between SIGKILL and restart (10)")
    p.add_argument("--packagers", default=",".join(PACKAGERS),
                   help=f"comma list of {', '.join(PACKAGERS)} (all)")
    p.add_argument("--source", type=Path, default=None,
                   help="publish this media file (looped, -c copy) instead of the test "
                        "pattern: check alignment on your own content")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output folder (default {DEFAULT_OUT.relative_to(HERE.parents[1])})")
    p.add_argument("--publish", action="store_true",
                   help="also copy RESULTS.md, results.json and drift.png into "
                        "benchmarks/drift/ (the committed results)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep segments, logs and configs under OUT/work")
    a = p.parse_args(argv)
    if not 2 <= a.nodes <= 5:
        p.error("--nodes must be between 2 and 5")
    if a.scenarios == "all":
        a.scenario_list = list(SCENARIOS.values())
    else:
        names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(unknown)}")
        a.scenario_list = [SCENARIOS[n] for n in names]
    a.packager_list = tuple(x.strip() for x in a.packagers.split(",") if x.strip())
    bad = [x for x in a.packager_list if x not in PACKAGERS]
    if bad or not a.packager_list:
        p.error(f"unknown packager(s): {', '.join(bad) or '(none)'}")
    if a.source is not None and not a.source.is_file():
        p.error(f"--source {a.source}: no such file")
    return a


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_requirements()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    code = snapshot_sidecar(work / "_sidecar_code")
    print(f"sidecar code: {code}", flush=True)
    cfg = RunConfig(nodes=a.nodes, seconds=a.seconds, segment_duration=a.segment_duration,
                    keyint=a.keyint, restart_gap=a.restart_gap, packagers=a.packager_list,
                    source=a.source.resolve() if a.source else None,
                    sidecar_code=work / "_sidecar_code")
    started = time.monotonic()
    load_start = _loadavg()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: list[ScenarioResult] = []
    for sc in a.scenario_list:
        print(f"== {sc.name}: {sc.title}", flush=True)
        res = run_scenario(sc, cfg, work, echo=lambda s: print(s, flush=True),
                           evidence=out / "evidence")
        results.append(res)
        print(table(res.records), flush=True)
        print(f"    ({res.elapsed:.0f} s)", flush=True)
        for p in res.problems:
            print(f"    problem: {p}", flush=True)
    cmd = "python -m benchmarks.drift" + ("" if argv is None and len(sys.argv) <= 1 else
                                           " " + shlex.join(sys.argv[1:] if argv is None
                                                            else argv))
    meta = {
        "date": date,
        "command": cmd,
        "nodes": a.nodes,
        "seconds": a.seconds,
        "segment_duration": a.segment_duration,
        "keyint": a.keyint,
        "restart_gap": a.restart_gap,
        "source": str(a.source) if a.source else "ffmpeg lavfi testsrc2 640x360@25 + sine, "
                                                  "libx264 ultrafast 600k, AAC 96k",
        "jitter": "per-node delaying TCP relay (python, benchmarks/drift/relay.py)",
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average_start_end": [load_start, _loadavg()],
        "machine": machine_info(),
        "sidecar_code": code,
    }
    png = out / "drift.png"
    has_plot = plot(png, results, a.segment_duration)
    write_json(out / "results.json", meta, results)
    write_boundaries(out / "boundaries.json", results)
    text = write_markdown(out / "RESULTS.md", meta, results, "drift.png" if has_plot else None)
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table([r for res in results for r in res.records]))
    print(f"\nwrote {out / 'RESULTS.md'}, {out / 'results.json'}"
          + (f", {png}" if has_plot else " (no plot: pip install matplotlib)"))
    if a.publish:
        for name in ("RESULTS.md", "results.json") + (("drift.png",) if has_plot else ()):
            shutil.copyfile(out / name, HERE / name)
        print(f"copied to {HERE}")
    del text
    return 0


if __name__ == "__main__":
    sys.exit(main())
