"""A VOD title as a client sees it: every URL its manifests list, fetched once."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import m3u8

NS = "{urn:mpeg:dash:schema:mpd:2011}"


def crawl(client: httpx.Client, base: str) -> dict[str, bytes]:
    """Every URL the TS and fMP4 playlists and the MPD under ``base`` list: path -> body.

    Each must answer 200 (asserted); a URL listed twice is fetched once.
    """
    seen: dict[str, bytes] = {}

    def get(url: str) -> bytes:
        if url not in seen:
            r = client.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[:200])
            seen[url] = r.content
        return seen[url]

    for entry in ("playlist.m3u8", "cmaf.m3u8"):
        pl = m3u8.loads(get(f"{base}/{entry}").decode())
        for child in [p.uri for p in pl.playlists] + [m.uri for m in pl.media if m.uri]:
            folder = f"{base}/{child}".rsplit("/", 1)[0]
            mp = m3u8.loads(get(f"{base}/{child}").decode())
            for s in mp.segments:
                if s.init_section is not None:
                    get(f"{folder}/{s.init_section.uri}")
                get(f"{folder}/{s.uri}")
    mpd = ET.fromstring(get(f"{base}/manifest.mpd"))
    for t in mpd.iter(f"{NS}SegmentTemplate"):
        get(f"{base}/{t.get('initialization')}")
        first = int(t.get("startNumber", "1"))
        count = sum(1 + int(s.get("r", "0")) for s in t.iter(f"{NS}S"))
        for n in range(first, first + count):
            get(f"{base}/{(t.get('media') or '').replace('$Number$', str(n))}")
    return seen
