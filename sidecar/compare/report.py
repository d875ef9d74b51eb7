"""A run's report: the terminal table (rich), the live progress view, JSON, and a PNG."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sidecar.compare.analyze import Comparison
from sidecar.compare.model import EVENT_KINDS, KIND_NAMES, CompareError, Summary
from sidecar.compare.poll import CompareConfig

MAX_JSON_EVENTS = 1000


def verdict(summary: Summary) -> str:
    if summary.exit_code == 2:
        return "NO RESULT"
    return "INTERCHANGEABLE" if summary.interchangeable else "NOT INTERCHANGEABLE"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _num(value: float | int | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def render(cmp: Comparison, summary: Summary, console: Console) -> None:
    """Print the report: origins, verdict, playlists per pair, segments, hazards."""
    kind = KIND_NAMES.get(cmp.kind, cmp.kind)
    state = "interrupted: partial report" if summary.interrupted else "complete"
    console.print(f"[bold]sidecar compare[/]: {len(cmp.urls)} origins, {kind}, "
                  f"{summary.duration_s:.1f} s, {summary.instants} polls ({state})")
    for label, url, media in zip(cmp.labels, cmp.urls, cmp.media_urls, strict=True):
        console.print(f"  {label}  {url}", highlight=False, soft_wrap=True)
        if media != url:
            console.print(f"     -> {media}", highlight=False, soft_wrap=True)
    style = "green" if summary.interchangeable else "red"
    console.print(f"[bold {style}]{verdict(summary)}[/] (exit {summary.exit_code}): first "
                  f"divergence {_secs(summary.first_divergence_s)}, longest full agreement "
                  f"{summary.longest_agreement_s:.1f} s")

    pairs = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    pairs.add_column("pair")
    for col in ("polls", "identical", "in step"):
        pairs.add_column(col, justify="right")
    pairs.add_column("where they differ (polls)")
    for p in summary.pairs:
        where = ", ".join(f"{k} {v}" for k, v in sorted(p.fields.items(), key=lambda kv: -kv[1]))
        n = p.instants
        pairs.add_row(f"{cmp.labels[p.a]}-{cmp.labels[p.b]}", str(n),
                      _pct(p.identical / n if n else None),
                      _pct((p.identical + p.edge) / n if n else None), where or "-")
    console.print(pairs)

    seg, sh = summary.segments, summary.shares
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    skipped = f", {seg['skipped']} skipped" if seg["skipped"] else ""
    grid.add_row("segments", f"{seg['checked']} of {seg['listed']} names checked{skipped}: "
                 f"byte-identical {_pct(sh['segments_identical'])}, ETags equal "
                 f"{_pct(sh['etags_equal'])}, served {_pct(sh['served'])}")
    frames = seg["video_drift_frames_max"]
    grid.add_row("drift", f"first video frame max {_num(seg['video_drift_ms_max'], ' ms')}"
                 + (f" ({frames:g} frames)" if frames is not None else "")
                 + f", median {_num(seg['video_drift_ms_median'], ' ms')}; first audio sample "
                 f"max {_num(seg['audio_drift_ms_max'], ' ms')}")
    grid.add_row("hazards", "none" if not cmp.events else ", ".join(
        f"{k} {n}" for k, n in summary.hazards.items() if n))
    console.print(grid)
    if cmp.events:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="first of each kind",
                      title_justify="left")
        table.add_column("kind")
        table.add_column("at", justify="right")
        table.add_column("what")
        for kind_name in EVENT_KINDS:
            first = next((e for e in cmp.events if e.kind == kind_name), None)
            if first is not None:
                table.add_row(kind_name, f"{first.t:.1f} s", Text(first.detail[:240]),
                              style="red")
        console.print(table)


class LiveView:
    """A one-line progress view on a terminal (nothing when not on a terminal)."""

    def __init__(self, console: Console, duration: float) -> None:
        self.console = console
        self.duration = duration
        self.live: Live | None = None
        self.last = 0.0

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self.live = Live(Text("probing ..."), console=self.console, transient=True,
                             refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.__exit__(exc_type, exc, tb)

    def update(self, cmp: Comparison, elapsed: float) -> None:
        if self.live is None or time.monotonic() - self.last < 0.2:
            return
        self.last = time.monotonic()
        polls = len(cmp.instants)
        agree = sum(i.agree for i in cmp.instants)
        bar_w = 24
        done = min(bar_w, int(bar_w * elapsed / self.duration)) if self.duration else 0
        line = Text(f"[{'#' * done}{'.' * (bar_w - done)}] {elapsed:5.1f}/{self.duration:g} s  "
                    f"polls {polls}  agreeing {agree}/{polls}  events {len(cmp.events)}  "
                    f"segments {len(cmp.checks)}/{cmp.listed}")
        line.stylize("red" if cmp.events else "green", 0, bar_w + 2)
        self.live.update(line)


def to_json(cmp: Comparison, summary: Summary, cfg: CompareConfig) -> dict[str, Any]:
    """The whole run as JSON-ready data (header values are left out: they may be secrets)."""
    return {
        "tool": "sidecar compare",
        "format": 1,
        "started_at": cmp.started_at.isoformat() if cmp.started_at else None,
        "kind": cmp.kind,
        "origins": [{"label": lb, "url": u, "media_url": m}
                    for lb, u, m in zip(cmp.labels, cmp.urls, cmp.media_urls, strict=True)],
        "verdict": verdict(summary).lower(),
        **asdict(summary),
        "settings": {"duration_s": cfg.duration, "max_rps": cfg.max_rps,
                     "max_kbps": cfg.max_kbps, "polls_per_target": cfg.polls_per_target,
                     "variant": cfg.variant, "timeout_s": cfg.timeout,
                     "headers": [k for k, _ in cfg.headers],
                     "query": [k for k, _ in cfg.query]},
        "events": [asdict(e) for e in cmp.events[:MAX_JSON_EVENTS]],
        "events_left_out": max(0, len(cmp.events) - MAX_JSON_EVENTS),
        "polls": [{"t": i.t, "agree": i.agree, "errors": {str(k): v for k, v in i.errors.items()},
                   "pairs": [asdict(p) for p in i.pairs]} for i in cmp.instants],
        "segment_checks": [{
            "t": c.t, "start": c.start, "track": c.track, "name": c.name, "init": c.init,
            "bytes_equal": c.bytes_equal, "etag_equal": c.etag_equal,
            "video_offsets_ms": list(c.video_offsets_ms), "video_drift_ms": c.video_drift_ms,
            "video_drift_frames": c.video_drift_frames, "audio_drift_ms": c.audio_drift_ms,
            "origins": [{"status": f.status, "error": f.error, "sha256": f.sha256,
                         "etag": f.etag, "size": f.size,
                         "video_pts_ms": f.timing.video_ms if f.timing else None,
                         "audio_pts_ms": f.timing.audio_ms if f.timing else None}
                        for f in c.fetched]} for c in cmp.checks],
    }


def check_png_support() -> None:
    """CompareError unless matplotlib can be imported (it is in the test extras)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise CompareError("--png needs matplotlib: pip install 'sidecar[png]' (or "
                           "matplotlib)") from exc


EVENT_COLOURS = {"sequence_conflict": "red", "sequence_backwards": "orange",
                 "missing": "purple", "bytes_differ": "grey", "drift": "brown",
                 "poll_error": "black", "variants_differ": "pink"}


def write_png(path: Path, cmp: Comparison, summary: Summary) -> None:
    """Boundary offset of every origin over time (first video frame, against the first
    origin that served the segment), divergence events as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    for i, label in enumerate(cmp.labels):
        pts = [(c.t if c.start is None else c.start, off) for c in cmp.checks
               if not c.init and (off := c.video_offsets_ms[i]) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                    linewidth=1, label=f"{label} {cmp.urls[i]}")
    seen: set[str] = set()
    for e in cmp.events:
        ax.axvline(e.t, color=EVENT_COLOURS.get(e.kind, "black"), alpha=0.5, linewidth=0.8,
                   label=None if e.kind in seen else e.kind)
        seen.add(e.kind)
    ax.set_xlim(right=max(summary.duration_s, 1.0))
    ax.set_xlabel("seconds since the run started (segments at their program date time, "
                  "events when seen)")
    ax.set_ylabel("first video frame offset (ms)")
    ax.set_title(f"sidecar compare: {verdict(summary).lower()}, first divergence "
                 f"{_secs(summary.first_divergence_s)}, longest agreement "
                 f"{summary.longest_agreement_s:.1f} s", fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
