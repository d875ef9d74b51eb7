"""Plain-text (Markdown) rendering of a throughput run: pasteable into RESULTS.md."""

from __future__ import annotations

from typing import Any

NOISE_NOTE = (
    "Noisy machine: the packagers share the cores with the publishers, nginx and anything "
    "else running on the host (see 'machine busy' and 'others'). Single runs vary by 10-20 %; "
    "use --repeat for medians.")


def _fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "-"
    return format(v, spec)


def _grid(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


PACKAGERS = ("sidecar", "sidecar-ts", "ffmpeg")
RATIOS = (("sidecar", "ffmpeg"), ("sidecar-ts", "ffmpeg"), ("sidecar", "sidecar-ts"))


def _name(pk: str, n: int) -> str:
    if pk == "sidecar":
        return "sidecar TS+CMAF (1 process)"
    if pk == "sidecar-ts":
        return "sidecar TS only (1 process)"
    return f"ffmpeg ({n} process{'es' if n > 1 else ''})"


def _ratio_key(a: str, b: str) -> str:
    return f"ratio_{a}_over_{b}".replace("-", "_")


def table(summary: list[dict[str, Any]]) -> str:
    """The main result: CPU, memory, segments, and the sidecar/ffmpeg ratios."""
    head = ["N", "packager", "CPU s", "CPU % of 1 core", "CPU %/stream", "peak RSS MiB",
            "RSS/stream MiB", "peak PSS MiB", "PSS/stream MiB",
            "segs/stream in window min/med/max (expected)", "all streams ok", "stopped on SIGTERM"]
    rows: list[list[str]] = []
    for row in summary:
        n = row["n"]
        for pk in PACKAGERS:
            s = row.get(pk)
            if s is None:
                continue
            segs = (f"{s['segments_window_min']}/{s['segments_window_median']:g}/"
                    f"{s['segments_window_max']} ({s['segments_expected_window']:.0f})")
            rows.append([str(n), _name(pk, n), _fmt(s["cpu_s"]), _fmt(s["cpu_pct_core"]),
                         _fmt(s["cpu_pct_core_per_stream"], ".2f"), _fmt(s["peak_rss_mib"]),
                         _fmt(s["rss_per_stream_mib"]), _fmt(s["peak_pss_mib"]),
                         _fmt(s["pss_per_stream_mib"]), segs,
                         "yes" if s.get("measured_ok", s["ok"]) else "NO",
                         "yes" if s.get("clean_stop", True) else "NO (killed)"])
        for a, b in RATIOS:
            ratio = row.get(_ratio_key(a, b))
            if ratio:
                rows.append([str(n), f"ratio {a}/{b}", f"{_fmt(ratio['cpu'], '.2f')}x", "", "",
                             f"{_fmt(ratio['peak_rss'], '.2f')}x", "",
                             f"{_fmt(ratio['peak_pss'], '.2f')}x", "", "", "", ""])
    return _grid(head, rows)


def conditions(summary: list[dict[str, Any]]) -> str:
    """How loaded the machine was while each side was measured."""
    head = ["N", "packager", "warm-up s", "window s", "machine busy % (all cores)",
            "publishers+nginx % of 1 core", "this script % of 1 core", "others % of 1 core",
            "RSS at window start/end MiB", "peak RssAnon MiB"]
    rows = []
    for row in summary:
        n = row["n"]
        for pk in PACKAGERS:
            s = row.get(pk)
            if s is None:
                continue
            rows.append([str(n), _name(pk, n), _fmt(s["warmup_s"], ".0f"),
                         _fmt(s["window_s"], ".0f"),
                         _fmt(s["machine_busy_pct_all_cores"], ".0f"),
                         _fmt(s["publishers_nginx_cpu_pct_core"], ".0f"),
                         _fmt(s.get("bench_cpu_pct_core"), ".1f"),
                         _fmt(s["other_cpu_pct_core"], ".0f"),
                         f"{_fmt(s['rss_window_start_mib'], '.0f')}/"
                         f"{_fmt(s['rss_window_end_mib'], '.0f')}",
                         _fmt(s["peak_rss_anon_mib"], ".0f")])
    return _grid(head, rows)


def marginal(summary: list[dict[str, Any]]) -> str:
    """Cost of one more stream, between the smallest and the largest N measured."""
    rows = [r for r in summary if "sidecar" in r and "ffmpeg" in r]
    if len(rows) < 2:
        return ""
    lo, hi = min(rows, key=lambda r: r["n"]), max(rows, key=lambda r: r["n"])
    dn = hi["n"] - lo["n"]
    out = []
    for pk in PACKAGERS:
        if pk not in lo or pk not in hi:
            continue
        a, b = lo[pk], hi[pk]
        out.append([_name(pk, 1).split(" (")[0], _fmt(a["cpu_pct_core"], ".2f"),
                    _fmt((b["cpu_pct_core"] - a["cpu_pct_core"]) / dn, ".2f"),
                    _fmt(a["peak_pss_mib"]), _fmt((b["peak_pss_mib"] - a["peak_pss_mib"]) / dn),
                    _fmt((b["peak_rss_mib"] - a["peak_rss_mib"]) / dn)])
    head = [f"packager (N={lo['n']} -> {hi['n']})", f"CPU % at N={lo['n']}",
            "CPU % per added stream", f"PSS MiB at N={lo['n']}", "PSS MiB per added stream",
            "RSS MiB per added stream"]
    return _grid(head, out)


def render(data: dict[str, Any]) -> str:
    m = data["meta"]
    a = data["args"]
    parts = [
        "",
        f"# sidecar (TS+CMAF, TS only) vs ffmpeg HLS throughput ({m['date']})",
        "",
        f"- machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory']} RAM, {m['os']}, "
        f"kernel {m['kernel']}",
        f"- versions: {m['ffmpeg']}; {m['nginx']}; Python {m['python']}; PyAV {m['pyav']}; "
        f"repo {m['git_commit']}"
        + (f" + uncommitted {', '.join(m['sidecar_uncommitted'])}"
           if m.get("sidecar_uncommitted") else ""),
        f"- window {float(a['seconds']):.0f} s per side and N after a warm-up (until every stream "
        f"has a segment, {float(a['warmup_min']):.0f}..{float(a['warmup_max']):.0f} s), "
        f"segment duration {a['segment_duration']} s, repeat {a['repeat']} "
        f"({'medians' if int(a['repeat']) > 1 else 'single run'}).",
        "- CPU = user+sys from /proc/PID/stat over the window (summed over all ffmpeg processes); "
        "peak RSS = max over 0.5 s samples of summed VmRSS, from start to the window's end "
        "(summing VmRSS counts ffmpeg's shared libraries once per process; PSS, sampled every "
        "5 s from /proc/PID/smaps_rollup, splits shared pages fairly).",
        f"- {NOISE_NOTE}",
        "",
        table(data["summary"]),
        "",
        "Conditions during each window (others = CPU used by processes outside this benchmark):",
        "",
        conditions(data["summary"]),
        "",
        "Marginal cost (fixed cost at the smallest N, then per added stream up to the largest):",
        "",
        marginal(data["summary"]),
        "",
    ]
    problems = [(r["n"], r["packager"], r["rep"], p) for r in data["runs"] for p in r["problems"]]
    if problems:
        parts.append("PROBLEMS:")
        parts += [f"- N={n} {pk} (rep {rep + 1}): {p}" for n, pk, rep, p in problems]
        parts.append("")
    for r in data["runs"]:
        lv = r["log_levels"]
        if r["packager"].startswith("sidecar"):
            bad = {k: v for k, v in lv.items() if k in ("WARNING", "ERROR", "CRITICAL",
                                                         "TRACEBACK")}
            extra = r.get("extras", {})
            parts.append(f"- {r['packager']} log N={r['n']} rep {r['rep'] + 1}: "
                         f"{lv.get('INFO', 0)} info, "
                         + (", ".join(f"{v} {k.lower()}" for k, v in bad.items()) or
                            "no warnings/errors")
                         + f"; /readyz {extra.get('readyz_status')}"
                         + (f" ({extra.get('not_ready_count')} streams not ready)"
                            if extra.get("not_ready_count") else "")
                         + f"; RSS window start/end {_fmt(r['rss_window_start_mib'], '.0f')}/"
                           f"{_fmt(r['rss_window_end_mib'], '.0f')} MiB")
            for msg, count in r["log_messages"][:6]:
                parts.append(f"  - {count} x `{msg}`")
        elif lv.get("LINES"):
            parts.append(f"- ffmpeg logs N={r['n']} rep {r['rep'] + 1}: {lv['LINES']} "
                         "warning lines")
            for msg, count in r["log_messages"][:4]:
                parts.append(f"  - {count} x `{msg}`")
    return "\n".join(parts) + "\n"
