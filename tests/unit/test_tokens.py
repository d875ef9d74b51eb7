"""Playback tokens: SecureToken v2 and HMAC accept/reject tables, and carrying them on.

The expected hashes are computed here by hand (hashlib/hmac and string building in the
test) or were computed with the openssl command line (the literals below), never with
the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

import pytest

from sidecar.errors import Forbidden
from sidecar.security import tokens
from sidecar.security.tokens import Grant, HmacPolicy, WowzaPolicy

NOW = 1_700_000_100
START, END = 1_700_000_000, 1_700_003_600


def by_hand(algorithm: str, content_path: str, items: list[str]) -> str:
    text = content_path + "?" + "&".join(sorted(items))
    digest = hashlib.new(algorithm, text.encode()).digest()
    return base64.b64encode(digest).decode().replace("+", "-").replace("/", "_")


def q(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True)


# (policy, path, query, client ip): each valid at NOW. The hashes of the first three come
# from `printf '%s' STRING | openssl dgst -sha256|-sha512|-sha384 -binary | base64 | tr
# '+/' '-_'` with the STRING in the comment.
OPENSSL_VECTORS = [
    # live/_definst_/demo?secret&wowzatokenendtime=1700003600&wowzatokenstarttime=1700000000
    (WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     "wowzatokenstarttime=1700000000&wowzatokenendtime=1700003600"
     "&wowzatokenhash=vZBGjQgeJwWL6702w2TJHfXeg2EfWUBPTqeQuLtygJY=", None),
    # live/_definst_/demo?192.0.2.7&wowzatokenCustomParameter=abc
    #   &wowzatokenendtime=1700003600&xyzSharedSecret
    (WowzaPolicy("xyzSharedSecret", hash="sha512", include_ip=True),
     "/live/demo/src/300000001.ts",
     "wowzatokenendtime=1700003600&wowzatokenCustomParameter=abc&wowzatokenhash="
     "KJa9F7AHJKv--oSaKtifnO1MifqkK9u90hPHeY8I4b38AeTafz80S5Q4WBTVyFjw3-pKKrZw8_y1mur2sjcTVg==",
     "192.0.2.7"),
    # vod/_definst_/mp4:sample.mp4?mytokenendtime=1700003600&s3cret  (explicit instance,
    # Wowza's mp4: name, other prefix; the unprefixed `other` is not hashed)
    (WowzaPolicy("s3cret", prefix="mytoken", hash="sha384"),
     "/vod/_definst_/mp4:sample.mp4/playlist.m3u8",
     "other=1&mytokenendtime=1700003600&mytokenhash="
     "2lugzGu1HaOJcmkP-VECdKWsnFOOm0XBIFalSR5hcCocyFLdHRHzKQR80beWsaZX", None),
    # printf '/live/demo/\n1700003600' | openssl dgst -sha256 -hmac k3y -binary | base64
    (HmacPolicy("k3y"), "/live/demo/video/init-0.mp4",
     "expires=1700003600&token=I05XDA9IZ9dhSsrzuBw2OTzCR6z0Y6MguEfrVq7aqu0", None),
]


@pytest.mark.parametrize(("policy", "path", "query", "ip"), OPENSSL_VECTORS)
def test_openssl_vectors_accepted(policy: tokens.Policy, path: str, query: str,
                                  ip: str | None) -> None:
    grant = tokens.check(policy, path, q(query), ip, NOW)
    # What is carried on is the token's own parameters, sorted, and nothing else.
    assert dict(q(grant.carried)) == {k: v for k, v in q(query) if k != "other"}
    assert [k for k, _ in q(grant.carried)] == sorted(k for k, _ in q(grant.carried))


def wowza_query(secret: str = "secret", *, algorithm: str = "sha256", content: str =
                "live/_definst_/demo", prefix: str = "wowzatoken", ip: str | None = None,
                **params: int | str) -> str:
    items = [f"{prefix}{k}={v}" for k, v in params.items()] + [secret]
    if ip is not None:
        items.append(ip)
    query = "&".join(f"{prefix}{k}={v}" for k, v in params.items())
    return f"{query}&{prefix}hash={by_hand(algorithm, content, items)}".lstrip("&")


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("path", ["/live/demo/playlist.m3u8", "/live/demo/src/media.m3u8",
                                  "/live/demo/src/300000000.ts", "/live/demo/cmaf.m3u8",
                                  "/live/demo/video/t162000000000000.m4s",
                                  "/live/demo/audio/init-2.mp4", "/live/demo/manifest.mpd",
                                  "/live/_definst_/demo/playlist.m3u8"])
def test_one_token_covers_every_file_of_the_stream(algorithm: str, path: str) -> None:
    query = wowza_query(algorithm=algorithm, starttime=START, endtime=END)
    tokens.check(WowzaPolicy("secret", hash=algorithm), path, q(query), None, NOW)


def test_hash_without_padding_and_no_time_limits_accepted() -> None:
    query = wowza_query().rstrip("=")  # only the hash: no start, no end
    assert not query.endswith("=")
    tokens.check(WowzaPolicy("secret"), "/live/demo/playlist.m3u8", q(query), None, 0)
    tokens.check(WowzaPolicy("secret"), "/live/demo/playlist.m3u8", q(query), None, 2**40)


GOOD = wowza_query(starttime=START, endtime=END)
REJECTED = [
    # (why, policy, path, query, ip, now, reason)
    ("no token", WowzaPolicy("secret"), "/live/demo/playlist.m3u8", "", None, NOW,
     "playback token required"),
    ("wrong secret", WowzaPolicy("other"), "/live/demo/playlist.m3u8", GOOD, None, NOW,
     "invalid playback token"),
    ("other stream", WowzaPolicy("secret"), "/live/other/playlist.m3u8", GOOD, None, NOW,
     "invalid playback token"),
    ("other app", WowzaPolicy("secret"), "/tv/demo/src/1.ts", GOOD, None, NOW,
     "invalid playback token"),
    ("other instance", WowzaPolicy("secret", instance="inst2"), "/live/demo/playlist.m3u8",
     GOOD, None, NOW, "invalid playback token"),
    ("other hash", WowzaPolicy("secret", hash="sha512"), "/live/demo/playlist.m3u8", GOOD,
     None, NOW, "invalid playback token"),
    ("end moved", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     GOOD.replace(f"endtime={END}", f"endtime={END + 3600}"), None, NOW,
     "invalid playback token"),
    ("param added", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     GOOD + "&wowzatokenCustom=1", None, NOW, "invalid playback token"),
    ("param dropped", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     GOOD.replace(f"wowzatokenstarttime={START}&", ""), None, NOW, "invalid playback token"),
    ("hash flipped", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     GOOD.replace("hash=", "hash=A"), None, NOW, "invalid playback token"),
    ("expired", WowzaPolicy("secret"), "/live/demo/playlist.m3u8", GOOD, None, END + 1,
     "playback token expired"),
    ("not yet", WowzaPolicy("secret"), "/live/demo/playlist.m3u8", GOOD, None, START - 1,
     "playback token not valid yet"),
    ("malformed end", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     wowza_query(endtime="soon"), None, NOW, "malformed wowzatokenendtime"),
    ("twice", WowzaPolicy("secret"), "/live/demo/playlist.m3u8",
     GOOD + f"&wowzatokenendtime={END}", None, NOW, "given twice"),
    ("no stream", WowzaPolicy("secret"), "/playlist.m3u8", GOOD, None, NOW, "no stream"),
    ("ip not bound", WowzaPolicy("secret", include_ip=True), "/live/demo/playlist.m3u8",
     GOOD, "192.0.2.7", NOW, "invalid playback token"),
    ("other ip", WowzaPolicy("secret", include_ip=True), "/live/demo/playlist.m3u8",
     wowza_query(ip="192.0.2.7", endtime=END), "192.0.2.8", NOW, "invalid playback token"),
]


@pytest.mark.parametrize(("why", "policy", "path", "query", "ip", "now", "reason"), REJECTED,
                         ids=[r[0] for r in REJECTED])
def test_rejected(why: str, policy: tokens.Policy, path: str, query: str, ip: str | None,
                  now: int, reason: str) -> None:
    with pytest.raises(Forbidden, match=reason) as err:
        tokens.check(policy, path, q(query), ip, now)
    # The reason never leaks the secret or the hash the node expected.
    assert "secret" not in str(err.value) and "=" not in str(err.value)


def test_expiry_bounds_are_inclusive() -> None:
    policy = WowzaPolicy("secret")
    for now in (START, END):
        tokens.check(policy, "/live/demo/src/1.ts", q(GOOD), None, now)


def test_ip_binding_accepts_the_bound_address() -> None:
    query = wowza_query(ip="192.0.2.7", endtime=END)
    policy = WowzaPolicy("secret", include_ip=True)
    tokens.check(policy, "/live/demo/playlist.m3u8", q(query), "192.0.2.7", NOW)


def test_sign_wowza_round_trips_and_matches_by_hand() -> None:
    policy = WowzaPolicy("secret", include_ip=True)
    query = tokens.sign_wowza(policy, "live", "demo", start=START, end=END,
                              client_ip="192.0.2.7", extra={"Custom": "x y"})
    params = dict(q(query))
    items = ["wowzatokenCustom=x y", f"wowzatokenstarttime={START}",
             f"wowzatokenendtime={END}", "secret", "192.0.2.7"]
    assert params["wowzatokenhash"] == by_hand("sha256", "live/_definst_/demo", items)
    tokens.check(policy, "/live/demo/src/media.m3u8", q(query), "192.0.2.7", NOW)


def hmac_by_hand(secret: str, message: str) -> str:
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


HMAC_GOOD = f"expires={END}&token=" + hmac_by_hand("k", f"/live/demo/\n{END}")
HMAC_PREFIX = f"path=/live/&expires={END}&token=" + hmac_by_hand("k", f"/live/\n{END}")
HMAC_IP = f"expires={END}&token=" + hmac_by_hand("k", f"/live/demo/\n{END}\n192.0.2.7")


@pytest.mark.parametrize(("policy", "path", "query", "ip", "now", "reason"), [
    (HmacPolicy("k"), "/live/demo/src/1.ts", HMAC_GOOD, None, END, None),
    (HmacPolicy("k"), "/live/demo/playlist.m3u8", HMAC_PREFIX, None, NOW, None),
    (HmacPolicy("k"), "/live/other/playlist.m3u8", HMAC_PREFIX, None, NOW, None),
    (HmacPolicy("k", include_ip=True), "/live/demo/src/1.ts", HMAC_IP, "192.0.2.7", NOW, None),
    (HmacPolicy("k"), "/live/demo/src/1.ts", HMAC_GOOD, None, END + 1, "expired"),
    (HmacPolicy("other"), "/live/demo/src/1.ts", HMAC_GOOD, None, NOW, "invalid"),
    (HmacPolicy("k"), "/live/other/src/1.ts", HMAC_GOOD, None, NOW, "invalid"),
    (HmacPolicy("k"), "/tv/demo/src/1.ts", HMAC_PREFIX, None, NOW, "not valid for this path"),
    (HmacPolicy("k"), "/live/demo/src/1.ts", HMAC_PREFIX.replace("/live/", "/"), None, NOW,
     "invalid"),
    (HmacPolicy("k"), "/live/demo/src/1.ts", HMAC_PREFIX.replace("/live/", "/live"), None,
     NOW, "malformed token path"),
    (HmacPolicy("k"), "/live/demo/src/1.ts", HMAC_GOOD.replace(str(END), str(END + 1), 1),
     None, NOW, "invalid"),
    (HmacPolicy("k", include_ip=True), "/live/demo/src/1.ts", HMAC_IP, "192.0.2.8", NOW,
     "invalid"),
    (HmacPolicy("k"), "/live/demo/src/1.ts", f"expires={END}", None, NOW, "required"),
    (HmacPolicy("k"), "/live/demo/src/1.ts", "token=abc", None, NOW, "malformed expires"),
])
def test_hmac_table(policy: HmacPolicy, path: str, query: str, ip: str | None, now: int,
                    reason: str | None) -> None:
    if reason is None:
        grant = tokens.check(policy, path, q(query), ip, now)
        assert dict(q(grant.carried)) == dict(q(query))
    else:
        with pytest.raises(Forbidden, match=reason):
            tokens.check(policy, path, q(query), ip, now)


def test_sign_hmac_round_trips() -> None:
    policy = HmacPolicy("k")
    assert tokens.sign_hmac(policy, None, END, stream_base="/live/demo/") == HMAC_GOOD
    query = tokens.sign_hmac(policy, "/live/", END)
    tokens.check(policy, "/live/x/src/media.m3u8", q(query), None, NOW)


@pytest.mark.parametrize(("path", "protected", "app", "stream"), [
    ("/live/demo/playlist.m3u8", True, "live", "demo"),
    ("/live/demo/src/7.ts", True, "live", "demo"),
    ("/live/_definst_/demo/video/init-0.mp4", True, "live", "demo"),
    ("/vod/movies/a.mp4/playlist.m3u8", True, "vod", "movies/a.mp4"),
    ("/vod/_definst_/mp4:a.mp4/src/3.ts", True, "vod", "mp4:a.mp4"),
    ("/vod/src/x.mp4/audio/1.m4s", True, "vod", "src/x.mp4"),
    ("/vod/m/,a,b,.urlset/1/src/3.ts", True, "vod", "m/,a,b,.urlset"),
    ("/vod/m/,a,b,.urlset/playlist.m3u8", True, "vod", "m/,a,b,.urlset"),
    ("/healthz", False, None, None),
    ("/readyz", False, None, None),
    ("/time", False, None, None),
    ("/streams", False, None, None),
    ("/live/demo/src/whatever.ts", True, "live", "demo"),
    ("/live/demo/extra.m3u8", True, None, None),
])
def test_paths(path: str, protected: bool, app: str | None, stream: str | None) -> None:
    assert tokens.is_protected(path) is protected
    sp = tokens.split_path(path)
    assert (sp and sp.app, sp and sp.stream) == (app, stream)


def test_carry_hls_appends_to_every_uri_once() -> None:
    playlist = ("#EXTM3U\n#EXT-X-VERSION:7\n"
                '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",URI="audio/media.m3u8"\n'
                '#EXT-X-STREAM-INF:BANDWIDTH=1\nvideo/media.m3u8\n'
                '#EXT-X-MAP:URI="init-0.mp4"\n#EXTINF:6.0,\n300000000.m4s\n'
                "#EXT-X-GAP\n#EXTINF:6.0,\n300000001.m4s?x=1\nhttp://cdn/elsewhere.ts\n")
    out = tokens.carry(playlist, "application/vnd.apple.mpegurl", "a=1&b=2")
    assert out.splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:7",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",URI="audio/media.m3u8?a=1&b=2"',
        "#EXT-X-STREAM-INF:BANDWIDTH=1", "video/media.m3u8?a=1&b=2",
        '#EXT-X-MAP:URI="init-0.mp4?a=1&b=2"', "#EXTINF:6.0,", "300000000.m4s?a=1&b=2",
        "#EXT-X-GAP", "#EXTINF:6.0,", "300000001.m4s?x=1&a=1&b=2", "http://cdn/elsewhere.ts"]
    assert tokens.carry(playlist, "application/vnd.apple.mpegurl", "") == playlist


def test_carry_mpd_sets_the_query_on_segment_templates_only() -> None:
    mpd = ('<MPD><Period><AdaptationSet><SegmentTemplate timescale="90000" '
           'initialization="video/init-0.mp4" media="video/t$Time$.m4s"><SegmentTimeline/>'
           '</SegmentTemplate></AdaptationSet></Period>'
           '<UTCTiming schemeIdUri="x" value="http://h/time"/></MPD>')
    out = tokens.carry(mpd, "application/dash+xml", "a=1&b=2")
    assert 'initialization="video/init-0.mp4?a=1&amp;b=2"' in out
    assert 'media="video/t$Time$.m4s?a=1&amp;b=2"' in out
    assert 'value="http://h/time"' in out
    assert out.replace("?a=1&amp;b=2", "") == mpd


def test_carried_query_is_canonical() -> None:
    """Any order in, one order out: the same token gives the same manifests everywhere."""
    a = tokens.check(WowzaPolicy("secret"), "/live/demo/playlist.m3u8", q(GOOD), None, NOW)
    shuffled = "&".join(reversed(GOOD.split("&")))
    b = tokens.check(WowzaPolicy("secret"), "/live/demo/playlist.m3u8", q(shuffled), None, NOW)
    assert a == b == Grant(a.carried)
    assert a.carried.startswith(f"wowzatokenendtime={END}&wowzatokenhash=")
