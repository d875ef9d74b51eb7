"""``sidecar compare`` end to end: run, handle Ctrl-C, print and write the report."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from rich.console import Console

from sidecar.compare.analyze import Comparison
from sidecar.compare.model import CompareError
from sidecar.compare.poll import CompareConfig, run_compare
from sidecar.compare.report import LiveView, check_png_support, render, to_json, write_png


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` as a pair; CompareError when there is no name."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise CompareError(f"--header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def parse_query(text: str) -> tuple[str, str]:
    """``"name=value"`` as a pair; CompareError when there is no name."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CompareError(f"--query {text!r}: expected 'name=value'")
    return name, value


async def _run(cfg: CompareConfig, view: LiveView) -> tuple[Comparison, float, bool]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if interrupted and task is not None:
            task.cancel()  # a second Ctrl-C: stop without a report
        interrupted = True
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        cmp, elapsed = await run_compare(cfg, stop, view.update)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return cmp, elapsed, interrupted


def execute(cfg: CompareConfig, json_path: Path | None = None,
            png_path: Path | None = None) -> int:
    """Run the comparison, print the report, write the files; return the exit code."""
    out, err = Console(), Console(stderr=True)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 120  # CI logs and files: no wrapping at 80 columns
    try:
        if png_path is not None:
            check_png_support()
        with LiveView(err, cfg.duration) as view:
            cmp, elapsed, interrupted = asyncio.run(_run(cfg, view))
    except CompareError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):  # interrupted twice, or before the run
        return 130
    summary = cmp.summary(elapsed, interrupted)
    render(cmp, summary, out)
    try:
        if json_path is not None:
            json_path.write_text(json.dumps(to_json(cmp, summary, cfg), indent=1) + "\n")
        if png_path is not None:
            write_png(png_path, cmp, summary)
    except OSError as exc:
        err.print(f"error: cannot write the report: {exc}", highlight=False, markup=False)
        return 2
    if summary.exit_code == 2:
        err.print("error: interrupted before the first poll", highlight=False)
    return summary.exit_code
