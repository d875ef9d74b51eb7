"""``sidecar package INPUT OUTDIR``: write a file's VOD package to disk.

The files are the ones ``/vod/{file}/...`` serves, byte for byte. A rich progress bar on a
terminal, plain log lines (every 10 %) otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.errors import SidecarError
from sidecar.grid import seconds_to_ticks
from sidecar.vod.index import build_index
from sidecar.vod.package import Vod, write_package
from sidecar.vod.reader import Source

log = logging.getLogger("sidecar.package")


@contextmanager
def _progress(name: str, tty: bool) -> Iterator[Callable[[int, int], None]]:
    if tty:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True)) as bar:
            task = bar.add_task(name, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return
    step = {"next": 0}

    def line(done: int, total: int) -> None:
        if done * 10 >= step["next"] * total or done == total:
            log.info("%s: %d/%d segments", name, done, total)
            step["next"] = done * 10 // total + 1

    yield line


def package_command(source: Path, outdir: Path, segment_duration: str, *,
                    tty: bool | None = None) -> int:
    """Run the command; returns the exit code (0, or 2 with a one-line reason)."""
    if tty is None:
        tty = sys.stderr.isatty()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        duration = seconds_to_ticks(segment_duration)
        if duration <= 0:
            raise ValueError("the segment duration must be positive")
    except (ValueError, ArithmeticError) as exc:
        print(f"error: --segment-duration {segment_duration}: {exc}", file=sys.stderr)
        return 2
    if not source.is_file():
        print(f"error: {source}: no such file", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        index = build_index(source)
        vod = Vod.of(index, duration)
        reader = Source.open(index)
        try:
            with _progress(source.name, tty) as progress:
                written = write_package(vod, reader, outdir, progress)
        finally:
            reader.close()
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum((outdir / name).stat().st_size for name in written)
    log.info("%s: %d segments, %d files, %.1f MB in %s in %.2f s", source.name,
             len(vod.spans), len(written), size / 1e6, outdir, time.monotonic() - started)
    return 0
