"""Does ``sidecar serve`` with N RTMP streams exit on SIGTERM? (see RESULTS.md, Findings)

    python -m benchmarks.throughput.shutdown_repro --streams 50 --run 75

Same setup as the benchmark (nginx-rtmp, N looping publishers, one ``sidecar serve``), then
SIGTERM after ``--run`` seconds. If the sidecar is still alive ``--grace`` seconds later, it gets
SIGABRT: with ``PYTHONFAULTHANDLER=1`` it writes every thread's stack to its log. Then it
prints the newest segment time per stream: streams that kept publishing after SIGTERM stand
out. Exit code 0 = the sidecar exited, 1 = it hung.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import time

from benchmarks.throughput import bench, procs


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput.shutdown_repro")
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--run", type=float, default=75.0, help="seconds before SIGTERM")
    p.add_argument("--grace", type=float, default=40.0, help="seconds to wait for exit")
    a = p.parse_args()
    root = bench.OUT / "shutdown-repro" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    deadline = bench.Deadline(a.run + a.grace + 120)
    src = bench.make_source(bench.OUT / "cache", 30)
    ng = bench.Nginx(root / "nginx", root)
    ng.start(deadline)
    pubs = bench.start_publishers(ng, src, a.streams, a.run + a.grace + 60, root / "pubs",
                                  deadline)
    os.environ["PYTHONFAULTHANDLER"] = "1"
    side = bench.SidecarSide(ng, a.streams, root, root, 6)
    [sc] = side.start()
    hung = False
    try:
        bench.sleep_bounded(a.run, deadline, alive=[sc])
        t_term = time.time()
        t0 = time.monotonic()
        sc.signal(signal.SIGTERM)
        if sc.wait(a.grace):
            print(f"N={a.streams}: exited {time.monotonic() - t0:.1f} s after SIGTERM "
                  f"(rc {sc.returncode})")
        else:
            hung = True
            print(f"N={a.streams}: still alive {a.grace:.0f} s after SIGTERM; SIGABRT for a "
                  f"thread dump in {side.log}")
            sc.signal(signal.SIGABRT)
            sc.wait(10)
    finally:
        procs.stop_all([sc, *pubs, *([ng.proc] if ng.proc else [])], timeout=10)
    late = []
    for d in sorted((side.datadir / "segments" / "live").glob("s*/src")):
        files = list(d.glob("*.ts"))
        newest = max((f.stat().st_mtime for f in files), default=0.0)
        if newest > t_term + 1:
            late.append(f"{d.parent.name}: {len(files)} segments, newest "
                        f"{newest - t_term:.0f} s after SIGTERM")
    print("streams still publishing after SIGTERM:", late or "none")
    shutil.rmtree(side.datadir / "segments", ignore_errors=True)  # ~450 MB at 50 streams
    print("log:", side.log)
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
