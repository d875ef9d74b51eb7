"""Outputs: the Markdown table (RESULTS.md), the JSON records, the boundary-offset plot."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.drift.scenarios import ScenarioResult

COLUMNS = [
    ("scenario", "scenario"), ("packager", "packager"), ("segments", "shared segs"),
    ("identical_names", "same names"), ("identical_sequence", "same seq"),
    ("identical_bytes", "same bytes"), ("playlists_equal", "same playlists"),
    ("drift_ms_max", "drift max ms"), ("drift_ms_median", "drift med ms"),
    ("drift_frames_max", "drift max frames"), ("name_collisions", "name reused"),
]


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in ("identical_names", "identical_sequence", "identical_bytes", "playlists_equal"):
        return f"{value * 100:.0f} %"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(records: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(t for _, t in COLUMNS) + " |"
    sep = "|" + "|".join(" --- " if k in ("scenario", "packager") else " ---: "
                         for k, _ in COLUMNS) + "|"
    rows = [head, sep]
    for r in records:
        rows.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


def _version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "?"


def machine_info() -> dict[str, Any]:
    import os

    import av

    from sidecar import __version__ as sidecar_version

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    rtmp_pkg = _version(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-rtmp"], r"(\S+)")
    return {
        "os": os_name,
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ffmpeg": _version(["ffmpeg", "-version"], r"ffmpeg version (\S+)"),
        "nginx": _version(["nginx", "-v"], r"nginx/(\S+)"),
        "libnginx-mod-rtmp": rtmp_pkg,
        "pyav": av.__version__,
        "sidecar": sidecar_version,
    }


def _code(c: dict[str, Any]) -> str:
    if not c:
        return "the working tree"
    text = f"a snapshot of {c.get('path', '?')} taken at the start (files sha256 {c['sha256']}"
    if "git_commit" in c:
        text += f", last changed in git commit {c['git_commit']}"
        text += ", with uncommitted changes" if c.get("uncommitted_changes") else ", unchanged"
    return text + "), run by every node"


def write_json(path: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> None:
    records = [r for res in results for r in res.records]
    path.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")


def write_boundaries(path: Path, results: list[ScenarioResult]) -> None:
    data = {res.scenario.name: res.boundaries for res in results}
    path.write_text(json.dumps(data) + "\n")


def write_markdown(path: Path, meta: dict[str, Any], results: list[ScenarioResult],
                   plot: str | None) -> str:
    records = [r for res in results for r in res.records]
    m = meta
    mi = m["machine"]
    lines = [
        "# Alignment drift: sidecar vs. the peers, same encoder, same run",
        "",
        f"Run {m['date']} with `{m['command']}` "
        f"({m['nodes']} nodes per packager, {m['seconds']:g} s per scenario plus room for "
        f"restarts, {m['segment_duration']:g} s segments, keyframe every {m['keyint']:g} s, "
        f"total {m['elapsed_s']:.0f} s; load average at start / end "
        f"{m['load_average_start_end'][0]} / {m['load_average_start_end'][1]}: the machine "
        "was shared with other work).",
        "",
        f"Machine: {mi['os']}, kernel {mi['kernel']}, {mi['cores']} cores ({mi['cpu']}). "
        f"Versions: ffmpeg {mi['ffmpeg']}, nginx {mi['nginx']} with libnginx-mod-rtmp "
        f"{mi['libnginx-mod-rtmp']}, Python {mi['python']}, PyAV {mi['pyav']}, "
        f"sidecar {mi['sidecar']}: {_code(m.get('sidecar_code', {}))}.",
        "",
        "Shares are over *shared segments*: segments that more than one node published, "
        "matched across nodes by the encoder frame they start with (see README.md). "
        "Drift is the distance between the nodes' start frames of one shared segment.",
        "",
        table(records),
        "",
        "## Other counts",
        "",
        "| scenario | packager | published per node | playlist samples (partial) | "
        "seen changing in place | rewritten in place | longest segment wait ms | "
        "unexpected exits |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        per = ", ".join(f"{k} {v}" for k, v in r["published_per_node"].items())
        lines.append(f"| {r['scenario']} | {r['packager']} | {per} | {r['playlist_samples']} "
                     f"({r['playlist_samples_partial']}) | {r['seen_changing_in_place']} | "
                     f"{r['rewritten_in_place']} | {r['segment_wait_ms_max']:g} | "
                     f"{r['unexpected_exits']} |")
    lines += ["", "## Scenarios and events", ""]
    for res in results:
        sc = res.scenario
        lines.append(f"- **{sc.name}** ({sc.title}; {res.elapsed:.0f} s): {sc.how}.")
        for e in res.events:
            lines.append(f"  - {e}")
        for p in res.problems:
            lines.append(f"  - problem: `{p}`")
        for p in res.notes:
            lines.append(f"  - note: `{p}`")
    if plot:
        lines += ["", "## Segment boundary offsets", "",
                  f"![boundary offset per node]({plot})", "",
                  "Each point is one shared segment: how much later this node's segment "
                  "starts than the earliest node's (0 = same frame)."]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def plot(path: Path, results: list[ScenarioResult], segment_s: float = 6.0) -> bool:
    """One panel per scenario; one line per node of every packager. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = len(results)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 2.5 * rows), squeeze=False)
    colors = {"sidecar": "tab:green", "sidecar-cmaf": "tab:olive", "ffmpeg-hls": "tab:red",
              "nginx-hls": "tab:blue"}
    styles = ["-", "--", ":", "-.", (0, (1, 3))]
    markers = ["o", "s", "^", "v", "D"]
    sizes = [7, 4, 3, 3, 3]
    gap_s = 1.6 * segment_s
    top = 0.0
    for k, res in enumerate(results):
        ax = axes[k // cols][k % cols]
        for packager, per_node in res.boundaries.items():
            for j, (node, pts) in enumerate(sorted(per_node.items())):
                if not pts:
                    continue
                xs: list[float] = []
                ys: list[float] = []
                for p in pts:  # break the line where a node published nothing for a while
                    if xs and p[0] - xs[-1] > gap_s:
                        xs.append(float("nan"))
                        ys.append(float("nan"))
                    xs.append(p[0])
                    ys.append(p[1])
                top = max(top, *(p[1] for p in pts))
                ax.plot(xs, ys, linestyle=styles[j % 5], marker=markers[j % 5],
                        markersize=sizes[j % 5], markerfacecolor="none" if j == 0 else None,
                        linewidth=1.0, color=colors.get(packager, "k"),
                        label=f"{packager} {node}", alpha=0.85)
        ax.set_title(res.scenario.name, fontsize=9)
        ax.set_xlabel("encoder time (s)", fontsize=8)
        ax.set_ylabel("offset (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    for k in range(n):
        axes[k // cols][k % cols].set_ylim(-0.05 * max(top, 500), 1.1 * max(top, 500))
    handles: list[Any] = []
    labels: list[str] = []
    for k in range(n):
        for h, lab in zip(*axes[k // cols][k % cols].get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True
