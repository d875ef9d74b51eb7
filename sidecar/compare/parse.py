"""Playlists and MPDs into the comparable model (pure: text, URL and instant in, Listing out).

The model keeps what a player acts on. HLS (parsed with ``m3u8``): version, target duration,
media and discontinuity sequence, playlist type, ENDLIST, and per segment its sequence
number, URI, duration, program date time (as players compute it), discontinuity number
(RFC 8216 §6.2.2 counting), GAP and EXT-X-MAP. DASH (``xml.etree``): the MPD's timing
attributes and, per Representation, every segment the SegmentTemplate/SegmentTimeline (or
SegmentList) addresses, expanded into URLs ($RepresentationID$, $Number$, $Time$,
$Bandwidth$, with widths). URLs on the manifest's own host are kept relative to the manifest,
so two origins that list the same names compare equal; UTCTiming, which names the host, is
left out.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit
from xml.etree import ElementTree

import m3u8

from sidecar.compare.model import CompareError, Entry, Listing, Multivariant

HLS_HEADER = ("version", "target_duration", "media_sequence", "discontinuity_sequence",
              "playlist_type", "endlist")
DASH_HEADER = ("type", "availabilityStartTime", "publishTime", "minimumUpdatePeriod",
               "timeShiftBufferDepth", "suggestedPresentationDelay", "minBufferTime",
               "maxSegmentDuration", "mediaPresentationDuration")
MAX_ENTRIES = 20_000  # per Representation: a bound against hostile or broken manifests


def classify(body: bytes) -> str | None:
    """``"hls"``, ``"dash"`` or None (neither) from the first bytes of a response body."""
    head = body[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"#EXTM3U"):
        return "hls"
    if head.startswith(b"<") and re.search(rb"<(\w+:)?MPD[\s>]", head):
        return "dash"
    return None


def strip_query(uri: str) -> str:
    """The URI without query and fragment (hls.js compares URIs this way)."""
    return uri.split("#", 1)[0].split("?", 1)[0]


def name_of(url: str, base: str) -> str:
    """``url`` relative to the directory of ``base`` when both are on the same host."""
    u, b = urlsplit(url), urlsplit(base)
    if (u.scheme, u.netloc) != (b.scheme, b.netloc):
        return url
    rel = posixpath.relpath(u.path or "/", posixpath.dirname(b.path or "/") or "/")
    return rel + (f"?{u.query}" if u.query else "")


def _hls_name(uri: str, base: str) -> str:
    return name_of(urljoin(base, uri), base) if urlsplit(uri).scheme else uri


# --------------------------------------------------------------------------------------------
# HLS
# --------------------------------------------------------------------------------------------


def parse_hls(text: str, url: str) -> Listing | Multivariant:
    """A media playlist as a Listing, a multivariant playlist as its variant URIs."""
    try:
        pl = m3u8.loads(text, uri=url)
    except Exception as exc:  # m3u8 raises plain exceptions on malformed tags
        raise CompareError(f"{url}: malformed HLS playlist ({exc})") from exc
    if pl.is_variant:
        return Multivariant(tuple(p.uri for p in pl.playlists))
    seq0 = int(pl.media_sequence or 0)
    disc = int(pl.discontinuity_sequence or 0)
    entries: list[Entry] = []
    for i, seg in enumerate(pl.segments):
        if seg.discontinuity:
            disc += 1
        init = seg.init_section.uri if seg.init_section is not None else None
        entries.append(Entry(
            track="", seq=seq0 + i, uri=_hls_name(str(seg.uri), url),
            duration=float(seg.duration or 0.0), disc=str(disc),
            pdt=seg.current_program_date_time, gap=bool(seg.gap_tag),
            init=_hls_name(str(init), url) if init else None))
    header = {
        "version": str(pl.version or ""),
        "target_duration": str(pl.target_duration or ""),
        "media_sequence": str(seq0),
        "discontinuity_sequence": str(int(pl.discontinuity_sequence or 0)),
        "playlist_type": str(pl.playlist_type or "").upper(),
        "endlist": "yes" if pl.is_endlist else "",
    }
    target = float(pl.target_duration or max((e.duration for e in entries), default=0.0))
    return Listing("hls-media", header, tuple(entries), target, not pl.is_endlist)


# --------------------------------------------------------------------------------------------
# DASH
# --------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
_TEMPLATE = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(?:%0(\d+)d)?\$|\$\$")


def parse_iso_duration(text: str) -> float:
    """ISO 8601 duration (``PT1M30.5S``, ``P1DT2H``) in seconds; years 365 d, months 30 d."""
    m = _DURATION.match(text.strip())
    if m is None or text.strip() in ("P", "PT", "-P"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    scale = {"y": 365 * 86400, "mo": 30 * 86400, "d": 86400, "h": 3600, "mi": 60, "s": 1}
    seconds = sum(float(m[k]) * v for k, v in scale.items() if m[k])
    return -seconds if m["sign"] else seconds


def expand_template(template: str, rep_id: str, number: int | None = None,
                    time: int | None = None, bandwidth: str = "") -> str:
    """A DASH URL template with its identifiers replaced (ISO/IEC 23009-1 §5.3.9.4.4)."""
    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, width = m[1], int(m[2]) if m[2] else 0
        if name == "RepresentationID":
            return rep_id
        if name == "Bandwidth":
            return bandwidth.zfill(width)
        value = number if name == "Number" else time
        if value is None:
            raise ValueError(f"${name}$ in {template!r} but no {name.lower()}")
        return str(value).zfill(width)
    return _TEMPLATE.sub(sub, template)


def expand_timeline(items: list[tuple[int | None, int, int]],
                    end: int | None) -> list[tuple[int, int]]:
    """``(t, d)`` of every segment of a SegmentTimeline given as ``(t, d, r)`` per S.

    A negative ``r`` repeats until the next S's ``t`` or, for the last S, until ``end``
    (exclusive; without ``end`` it means no repeat).
    """
    out: list[tuple[int, int]] = []
    t = 0
    for i, (s_t, d, r) in enumerate(items):
        if s_t is not None:
            t = s_t
        if d <= 0:
            continue
        if r < 0:
            nxt = items[i + 1][0] if i + 1 < len(items) else end
            r = max(0, math.ceil((nxt - t) / d) - 1) if nxt is not None else 0
        for _ in range(r + 1):
            out.append((t, d))
            t += d
            if len(out) >= MAX_ENTRIES:
                return out
    return out


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _children(el: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ElementTree.Element | None, name: str) -> ElementTree.Element | None:
    if el is None:
        return None
    found = _children(el, name)
    return found[0] if found else None


def _base(url: str, el: ElementTree.Element) -> str:
    b = _child(el, "BaseURL")
    return urljoin(url, (b.text or "").strip()) if b is not None and b.text else url


@dataclass(frozen=True, slots=True)
class _Template:
    """SegmentTemplate attributes merged from Period, AdaptationSet and Representation."""

    attrs: dict[str, str]
    timeline: ElementTree.Element | None


def _template(*levels: ElementTree.Element) -> _Template | None:
    attrs: dict[str, str] = {}
    timeline = None
    found = False
    for level in levels:
        st = _child(level, "SegmentTemplate")
        if st is None:
            continue
        found = True
        attrs.update(st.attrib)
        inner = _child(st, "SegmentTimeline")
        timeline = inner if inner is not None else timeline
    return _Template(attrs, timeline) if found else None


def _dt(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None


def _duration_attr(el: ElementTree.Element, name: str) -> float | None:
    text = el.get(name)
    if not text:
        return None
    try:
        return parse_iso_duration(text)
    except ValueError:
        return None


def parse_mpd(body: bytes, url: str, now: datetime) -> Listing:
    """An MPD as a Listing: every addressed segment of every Representation, at ``now``."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise CompareError(f"{url}: malformed MPD ({exc})") from exc
    if _local(root.tag) != "MPD":
        raise CompareError(f"{url}: not a DASH MPD (root element {_local(root.tag)})")
    dynamic = root.get("type", "static") == "dynamic"
    ast = _dt(root.get("availabilityStartTime"))
    tsbd = _duration_attr(root, "timeShiftBufferDepth")
    total = _duration_attr(root, "mediaPresentationDuration")
    base = _base(url, root)
    periods = _children(root, "Period")
    entries: list[Entry] = []
    start = 0.0
    for pi, period in enumerate(periods):
        if period.get("start"):
            start = _duration_attr(period, "start") or 0.0
        duration = _duration_attr(period, "duration")
        if duration is None and pi + 1 < len(periods) and periods[pi + 1].get("start"):
            duration = (_duration_attr(periods[pi + 1], "start") or 0.0) - start
        if duration is None and total is not None and pi + 1 == len(periods):
            duration = total - start
        ctx = _PeriodCtx(period.get("id") or f"p{pi}", start, duration, dynamic, ast, tsbd, now)
        pbase = _base(base, period)
        for ai, aset in enumerate(_children(period, "AdaptationSet")):
            abase = _base(pbase, aset)
            for ri, rep in enumerate(_children(aset, "Representation")):
                rep_id = rep.get("id") or f"{aset.get('id', ai)}.{ri}"
                entries += _representation(ctx, url, _base(abase, rep), rep_id,
                                           rep.get("bandwidth", ""), (period, aset, rep))
        start += duration or 0.0
    header = {k: root.get(k, "") for k in DASH_HEADER}
    target = (_duration_attr(root, "maxSegmentDuration")
              or max((e.duration for e in entries), default=0.0)
              or _duration_attr(root, "minimumUpdatePeriod") or 0.0)
    return Listing("dash", header, tuple(entries), target, dynamic)


@dataclass(frozen=True, slots=True)
class _PeriodCtx:
    id: str
    start: float  # seconds from availabilityStartTime
    duration: float | None
    dynamic: bool
    ast: datetime | None
    tsbd: float | None
    now: datetime


def _representation(ctx: _PeriodCtx, url: str, base: str, rep_id: str, bandwidth: str,
                    levels: tuple[ElementTree.Element, ...]) -> list[Entry]:
    tpl = _template(*levels)
    if tpl is not None:
        return list(_template_entries(ctx, url, base, rep_id, bandwidth, tpl))
    seglist = None
    for level in levels:
        inner = _child(level, "SegmentList")
        seglist = inner if inner is not None else seglist
    if seglist is not None:
        timescale = int(seglist.get("timescale", "1"))
        dur = int(seglist.get("duration", "0"))
        first = int(seglist.get("startNumber", "1"))
        init_el = _child(seglist, "Initialization")
        init = (name_of(urljoin(base, init_el.get("sourceURL", "")), url)
                if init_el is not None and init_el.get("sourceURL") else None)
        return [Entry(rep_id, first + i, name_of(urljoin(base, s.get("media", "")), url),
                      dur / timescale, ctx.id, init=init)
                for i, s in enumerate(_children(seglist, "SegmentURL")[:MAX_ENTRIES])]
    # SegmentBase or nothing: the Representation is one file at its BaseURL.
    return [Entry(rep_id, 0, name_of(base, url), ctx.duration or 0.0, ctx.id)]


def _template_entries(ctx: _PeriodCtx, url: str, base: str, rep_id: str, bandwidth: str,
                      tpl: _Template) -> Iterator[Entry]:
    a = tpl.attrs
    timescale = int(a.get("timescale", "1")) or 1
    pto = int(a.get("presentationTimeOffset", "0"))
    first = int(a.get("startNumber", "1"))
    media = a.get("media", "")
    by_number = "$Number" in media
    init = (name_of(urljoin(base, expand_template(a["initialization"], rep_id,
                                                  bandwidth=bandwidth)), url)
            if a.get("initialization") else None)
    if tpl.timeline is not None:
        items = [(_int_or_none(s.get("t")), int(s.get("d", "0")), int(s.get("r", "0")))
                 for s in _children(tpl.timeline, "S")]
        end = None
        if ctx.duration is not None:
            end = pto + round(ctx.duration * timescale)
        elif ctx.dynamic and ctx.ast is not None:
            end = pto + round(((ctx.now - ctx.ast).total_seconds() - ctx.start) * timescale)
        segments = [(first + i, t, d) for i, (t, d) in enumerate(expand_timeline(items, end))]
    else:
        d = int(a.get("duration", "0"))
        if d <= 0:
            return
        if ctx.dynamic and ctx.ast is not None:
            elapsed = (ctx.now - ctx.ast).total_seconds() - ctx.start
            if ctx.duration is not None:
                elapsed = min(elapsed, ctx.duration)
            count = max(0, math.floor(elapsed * timescale / d))
            keep = math.floor(ctx.tsbd * timescale / d) if ctx.tsbd else count
            lo = max(0, count - min(keep, MAX_ENTRIES))
        else:
            count = math.ceil((ctx.duration or 0.0) * timescale / d)
            lo = 0
        segments = [(first + k, pto + k * d, d) for k in range(lo, min(count, lo + MAX_ENTRIES))]
    for number, t, d in segments:
        uri = expand_template(media, rep_id, number=number, time=t, bandwidth=bandwidth)
        pdt = None
        if ctx.dynamic and ctx.ast is not None:
            pdt = ctx.ast + timedelta(seconds=ctx.start + (t - pto) / timescale)
        yield Entry(rep_id, number if by_number else t, name_of(urljoin(base, uri), url),
                    d / timescale, ctx.id, pdt=pdt, init=init)
