"""Playback tokens across a cluster: one SecureToken v2 URL plays through a round-robin
balancer while every request may land on another node.

Two ``sidecar serve`` nodes with the same ``--token-secret`` package the built-in clock-locked
test source and share one timeline store (a SQLite file; on one host that is what Redis is
across hosts); the second joins late and backfills the window from the first, whose token
gate lets its signed peer fetches through. HAProxy balances every request on its own.
hls.js (TS playlist) and dash.js (MPD) in headless Chromium play the tokened entry URLs for
20 s with zero errors; HAProxy's log shows that both nodes served tokened segments.
Requests without the token, with a tampered one or an expired one get 403 from either node.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import m3u8
import pytest

from sidecar.security.tokens import WowzaPolicy, sign_wowza
from tests.e2e.harness import Haproxy, ProcessRegistry, wait_http, wait_until
from tests.e2e.sidecar_node import SidecarNode

pytestmark = pytest.mark.e2e

SECRET = "e2e-shared-secret"
SECONDS = 20.0


def test_a_tokened_url_plays_through_the_balancer_and_nothing_plays_without(
        procs: ProcessRegistry, workdir: Path) -> None:
    from tests.e2e.browser import check_browser_requirements, start_in_browser

    check_browser_requirements()
    store = workdir / "timeline.sqlite3"
    nodes = [SidecarNode(n, workdir, ["live/demo=synthetic:"], store=store,
                         extra=["--token-secret", SECRET], registry=procs) for n in ("a", "b")]
    a, b = nodes
    a.start()
    lb = Haproxy(workdir / "haproxy", None, [(n.node_id, "127.0.0.1", n.port) for n in nodes],
                 registry=procs).start()
    now = int(time.time())
    query = sign_wowza(WowzaPolicy(SECRET), "live", "demo", start=now - 60, end=now + 600)
    media = f"/live/demo/src/media.m3u8?{query}"

    def listed(node: SidecarNode) -> int:
        r = node.get(media)
        return len(m3u8.loads(r.text).segments) if r.status_code == 200 else 0

    # b joins late: the segments a listed before can only come from a (backfill), which
    # answers b's peer fetches because b signs them with the shared secret.
    wait_until(lambda: listed(a) >= 3, 45, 0.5, what="three listed segments on a")
    b.start()
    wait_until(lambda: listed(b) >= 3, 45, 0.5, what="three listed segments on b")
    for node in nodes:
        wait_http(f"{node.url}/readyz", timeout=30)  # open: the balancer's check has no token
        lb.wait_server_state(node.node_id, "UP", timeout=15)

    metrics = b.get("/metrics").text
    fetched = sum(float(v) for v in re.findall(r"^sidecar_peer_fetches_total\{[^}]*\} (\S+)$",
                                               metrics, re.M))
    refused = re.findall(r'^sidecar_peer_fetch_failures_total\{[^}]*reason="status"[^}]*\} (\S+)$',
                         metrics, re.M)
    assert fetched >= 3 and all(float(v) == 0 for v in refused), (fetched, refused)

    # Refused on every node, whatever is wrong, with a short JSON reason.
    tampered = re.sub(r"wowzatokenendtime=\d+", f"wowzatokenendtime={now + 86_400}", query)
    expired = sign_wowza(WowzaPolicy(SECRET), "live", "demo", end=now - 1)
    for path, reason in [("/live/demo/playlist.m3u8", "playback token required"),
                         ("/live/demo/manifest.mpd", "playback token required"),
                         (f"/live/demo/playlist.m3u8?{tampered}", "invalid playback token"),
                         (f"/live/demo/src/media.m3u8?{expired}", "playback token expired")]:
        answers = [httpx.get(lb.url + path, timeout=5) for _ in range(4)]
        assert {r.headers["x-node"] for r in answers} == {"a", "b"}
        for r in answers:
            assert (r.status_code, r.json()) == (403, {"error": reason}), (path, r.text)
            assert SECRET not in r.text

    # The token reaches the children, identically on both nodes; a child without it is refused.
    pl = m3u8.loads(nodes[0].get(f"/live/demo/playlist.m3u8?{query}").text)
    assert [p.uri for p in pl.playlists] == [f"src/media.m3u8?{query}"]
    seg = m3u8.loads(nodes[0].get(media).text).segments[-1].uri
    assert seg.endswith(f".ts?{query}")
    seg_url = urljoin(f"{lb.url}/live/demo/src/", seg)
    served = [httpx.get(seg_url, timeout=10) for _ in range(2)]
    assert [r.status_code for r in served] == [200, 200]
    assert served[0].content == served[1].content
    assert {r.headers["x-node"] for r in served} == {"a", "b"}
    assert httpx.get(seg_url.split("?")[0], timeout=5).status_code == 403

    players = {
        "hls": start_in_browser(f"{lb.url}/live/demo/playlist.m3u8?{query}", SECONDS,
                                workdir, "hls", name="hls", registry=procs),
        "dash": start_in_browser(f"{lb.url}/live/demo/manifest.mpd?{query}", SECONDS,
                                 workdir, "dash", name="dash", registry=procs),
    }
    results = {k: p.result() for k, p in players.items()}
    problems = []
    for key, br in results.items():
        if not (br.complete and br.played and br.frags_loaded >= 5):
            problems.append(f"{key}: complete={br.complete} played={br.played} "
                            f"frags={br.frags_loaded}")
        if br.errors or br.fatal_errors or br.http_errors or br.video_errors or \
                br.console_errors:
            problems.append(f"{key}: {br.describe()}")
        if (br.current_time_advanced or 0.0) < SECONDS - 6:
            problems.append(f"{key}: played only {br.current_time_advanced:.1f} s")
    assert not problems, "\n".join(problems)

    # Both nodes served the players' tokened segments (HAProxy logs the server per request).
    log = lb.log_text()
    for ext in (".ts", ".m4s"):
        by_node = {n.node_id: len(re.findall(
            rf"be/{n.node_id} .*\" *GET /live/demo/\S+{re.escape(ext)}\?wowzatoken\S*hash=",
            log)) for n in nodes}
        assert all(count >= 2 for count in by_node.values()), (ext, by_node)
    # And no request carrying the valid token was refused by either node.
    statuses = re.findall(r"be/\w+ \S+ (\d{3}) .*\?" + re.escape(query) + " ", log)
    assert len(statuses) >= 20 and set(statuses) <= {"200", "304"}, statuses[:20]
