"""Playback tokens that every node validates alike: pure functions, no I/O, no clock.

Two schemes, one shared secret; a token is checked from the request path, its query, the
client address and the time, so any node holding the secret accepts what any other
accepts, and a player moved to another node mid-stream keeps playing.

**Wowza SecureToken version 2** (what Wowza Streaming Engine >= 4.1 checks), after Wowza's
"Protect streaming using SecureToken in Wowza Streaming Engine" (wowza.com/docs, sections
"SecureToken query parameters" and "Hash generation") and the forum answers quoting the
server's own debug log (``ModuleCoreSecurity:string hashed: ...``)::

    hash input = "{app}/{instance}/{stream}?" + "&".join(sorted(
                     ["{k}={v}" for every query parameter k starting with the prefix,
                      except "{prefix}hash"] + [secret] + ([client_ip] if configured)))
    {prefix}hash = base64 of SHA-256/384/512(hash input), alphabet "-_" for "+/"

* The sort is a plain (code point) string sort of the whole ``key=value`` items with the
  secret and the IP among them: the docs' RTSP example orders
  ``wowzatokenCustomParameter=abcdef`` before ``wowzatokenendtime=...`` before
  ``xyzSharedSecret`` (upper case first); a Wowza engineer's PHP answer on the forum
  hashes ``IP&secret&wowzatokenendtime=..&wowzatokenstarttime=..`` (digits first). That
  worked example's published hash cannot be reproduced from its own string (it also
  mixes ``myValue``/``abcdef``), so the tests check openssl-computed vectors of the formula,
  not a hash from Wowza.
* The content path names the application instance explicitly (``_definst_`` unless the
  URL gives one) and the stream as the URL names it (``mp4:`` included), but not the
  HTTP file name: the server's debug log quoted on the forum shows ``string hashed:
  vod/_definst_/mp4:some.mp4?...``, and the PHP answer signs
  ``/vod/_definst_/mp4:sample.mp4/playlist.m3u8`` over ``vod/_definst_/mp4:sample.mp4``.
  Here the same path covers everything under the stream (``src/media.m3u8``,
  ``src/7.ts``, ``video/init-3.mp4``), so one token serves a whole playback session.
* The base64 is URL-safe and keeps its ``=`` padding (the docs' example hash ends in
  ``=``; the server logs ``hashCalculated: ...=``). A hash sent without the padding is
  accepted too: padding carries no information and some URL builders strip it.
* ``{prefix}starttime`` and ``{prefix}endtime`` are Unix seconds; absent (or 0, what the
  server logs for an absent one) means no limit. Custom ``{prefix}X`` parameters are
  hashed too, and query values are hashed URL-decoded.
* How Wowza itself carries the token from ``playlist.m3u8`` to its chunklists and
  segments is the subject of a docs section ("SecureToken parameters encoded into
  manifest and media responses") whose text was not available here; its chunklist URLs
  carry a session id per client and per server (``chunklist_w{session}.m3u8``), which no
  other node knows. Here the validated token query is appended to every child URI
  instead (``carry_hls``, ``carry_mpd``), in a fixed order, so nodes write identical
  manifests and any node accepts the children.

**HMAC tokens** (for non-Wowza users): ``?expires=UNIX&token=T`` with an optional
``path=/live/`` (a path prefix ending in ``/``; default: the stream's own base path, e.g.
``/live/demo/``)::

    T = base64url_nopad(HMAC-SHA256(secret, f"{path}\\n{expires}" [+ f"\\n{client_ip}"]))

valid while the request path starts with ``path`` and ``now <= expires``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sidecar.errors import Forbidden

HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
SCHEMES = ("wowza", "hmac")
# Last path component suffixes that carry media (manifests and segments) and need a token.
PROTECTED_SUFFIXES = (".m3u8", ".mpd", ".ts", ".m4s", ".mp4", ".m4a", ".aac", ".vtt")
# What follows the stream in a URL: the entry manifests, or a rendition's playlist and
# files (a VOD ``.urlset`` group puts a member number before the rendition).
_ENTRIES = ("playlist.m3u8", "cmaf.m3u8", "manifest.mpd")
_RENDITIONS = ("src", "video", "audio")
_RESOURCE = re.compile(
    rf"^(?P<stream>.+?)(?:(?<=\.urlset)/\d{{1,2}})?"
    rf"/(?:{'|'.join(re.escape(e) for e in _ENTRIES)}|(?:{'|'.join(_RENDITIONS)})/[^/]+)$")
_URI_ATTR = re.compile(r'URI="([^"]*)"')
_TEMPLATE = re.compile(r"<SegmentTemplate\b[^>]*>")
_TEMPLATE_URL = re.compile(r'\b(media|initialization)="([^"]*)"')
HMAC_PARAMS = ("path", "expires", "token")


@dataclass(frozen=True, slots=True)
class WowzaPolicy:
    """SecureToken v2 as configured in Wowza's Playback Security tab."""

    secret: str
    prefix: str = "wowzatoken"
    hash: str = "sha256"
    include_ip: bool = False
    instance: str = "_definst_"

    def __post_init__(self) -> None:
        if self.hash not in HASHES:
            raise ValueError(f"token hash {self.hash!r}: use {', '.join(HASHES)}")
        if not self.secret or not self.prefix:
            raise ValueError("a token secret and prefix must not be empty")


@dataclass(frozen=True, slots=True)
class HmacPolicy:
    """The simple scheme: a path prefix and an expiry under HMAC-SHA256."""

    secret: str
    include_ip: bool = False

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("a token secret must not be empty")


Policy = WowzaPolicy | HmacPolicy


@dataclass(frozen=True, slots=True)
class StreamPath:
    """Where a media URL points: ``/{app}/[{instance}/]{stream}/{resource}``."""

    app: str
    instance: str | None  # as the URL gives it; None when it gives none
    stream: str
    base: str  # the URL path up to and including the stream, with a trailing "/"


@dataclass(frozen=True, slots=True)
class Grant:
    """A valid token: the query to append to every child URI of the manifest answered."""

    carried: str


def is_protected(path: str) -> bool:
    """Whether ``path`` (a URL path) serves media and so needs a token."""
    return path.rsplit("/", 1)[-1].lower().endswith(PROTECTED_SUFFIXES)


def split_path(path: str, instance: str = "_definst_") -> StreamPath | None:
    """``/live/demo/src/3.ts`` -> app ``live``, stream ``demo``; None if no stream in it."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        return None
    app, rest, given = parts[0], parts[1:], None
    if rest[0] == instance and len(rest) >= 3:
        given, rest = rest[0], rest[1:]
    m = _RESOURCE.match("/".join(rest))
    if m is None:
        return None
    stream = m.group("stream")
    base = "/" + "/".join([app] + ([given] if given else []) + [stream]) + "/"
    return StreamPath(app, given, stream, base)


def _b64url(digest: bytes, *, pad: bool) -> str:
    text = base64.urlsafe_b64encode(digest).decode("ascii")
    return text if pad else text.rstrip("=")


def _same(a: str, b: str) -> bool:
    """Constant-time comparison, ``=`` padding ignored."""
    return hmac.compare_digest(a.rstrip("=").encode(), b.rstrip("=").encode())


def _params(query: Iterable[tuple[str, str]], keep: Callable[[str], bool]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in query:
        if keep(key):
            if key in out:
                raise Forbidden(f"token parameter {key} given twice")
            out[key] = value
    return out


def _carry(params: dict[str, str]) -> str:
    """Deterministic query text: keys sorted, values percent-encoded (``=`` kept)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='=')}"
                    for k, v in sorted(params.items()))


# -- Wowza SecureToken v2 ---------------------------------------------------------------

def wowza_hash_input(policy: WowzaPolicy, content_path: str, params: dict[str, str],
                     client_ip: str | None = None) -> str:
    """The string SecureToken v2 hashes (``params``: the prefixed ones, hash excluded)."""
    items = [f"{k}={v}" for k, v in params.items()] + [policy.secret]
    if policy.include_ip:
        items.append(client_ip or "")
    return f"{content_path}?" + "&".join(sorted(items))


def wowza_content_path(policy: WowzaPolicy, sp: StreamPath) -> str:
    return f"{sp.app}/{sp.instance or policy.instance}/{sp.stream}"


def wowza_hash(policy: WowzaPolicy, content_path: str, params: dict[str, str],
               client_ip: str | None = None) -> str:
    text = wowza_hash_input(policy, content_path, params, client_ip)
    return _b64url(HASHES[policy.hash](text.encode()).digest(), pad=True)


def sign_wowza(policy: WowzaPolicy, app: str, stream: str, *, start: int | None = None,
               end: int | None = None, client_ip: str | None = None,
               extra: dict[str, str] | None = None) -> str:
    """The query a web server appends to ``/{app}/{stream}/playlist.m3u8``."""
    p = policy.prefix
    params = {f"{p}{k}": v for k, v in (extra or {}).items()}
    if start is not None:
        params[f"{p}starttime"] = str(start)
    if end is not None:
        params[f"{p}endtime"] = str(end)
    content = f"{app}/{policy.instance}/{stream}"
    params[f"{p}hash"] = wowza_hash(policy, content, params, client_ip)
    return _carry(params)


def _unix(params: dict[str, str], key: str) -> int:
    value = params.get(key, "0")
    if not value.isdigit() or len(value) > 12:
        raise Forbidden(f"malformed {key}")
    return int(value)


def check_wowza(policy: WowzaPolicy, sp: StreamPath, query: Iterable[tuple[str, str]],
                client_ip: str | None, now: int) -> Grant:
    p = policy.prefix
    params = _params(query, lambda k: k.startswith(p))
    sent = params.pop(f"{p}hash", None)
    if sent is None:
        raise Forbidden("playback token required")
    start, end = _unix(params, f"{p}starttime"), _unix(params, f"{p}endtime")
    expected = wowza_hash(policy, wowza_content_path(policy, sp), params, client_ip)
    if not _same(sent, expected):
        raise Forbidden("invalid playback token")
    if start and now < start:
        raise Forbidden("playback token not valid yet")
    if end and now > end:
        raise Forbidden("playback token expired")
    return Grant(_carry({**params, f"{p}hash": sent}))


# -- HMAC -------------------------------------------------------------------------------

def hmac_token(policy: HmacPolicy, path: str, expires: int,
               client_ip: str | None = None) -> str:
    message = f"{path}\n{expires}" + (f"\n{client_ip or ''}" if policy.include_ip else "")
    mac = hmac.new(policy.secret.encode(), message.encode(), hashlib.sha256).digest()
    return _b64url(mac, pad=False)


def sign_hmac(policy: HmacPolicy, path: str | None, expires: int,
              client_ip: str | None = None, *, stream_base: str | None = None) -> str:
    """The query for URLs under ``path`` (or, with ``path=None``, under ``stream_base``)."""
    signed = path if path is not None else stream_base
    if signed is None:
        raise ValueError("a path prefix or the stream's base path is needed")
    params = {"expires": str(expires), "token": hmac_token(policy, signed, expires, client_ip)}
    if path is not None:
        params["path"] = path
    return _carry(params)


def check_hmac(policy: HmacPolicy, request_path: str, sp: StreamPath | None,
               query: Iterable[tuple[str, str]], client_ip: str | None, now: int) -> Grant:
    params = _params(query, lambda k: k in HMAC_PARAMS)
    sent = params.get("token")
    if sent is None:
        raise Forbidden("playback token required")
    if "path" in params:
        path = params["path"]
        if not (path.startswith("/") and path.endswith("/")):
            raise Forbidden("malformed token path")
    elif sp is not None:
        path = sp.base
    else:
        raise Forbidden("no stream in path")
    expires = _unix(params, "expires") if "expires" in params else None
    if expires is None:
        raise Forbidden("malformed expires")
    if not _same(sent, hmac_token(policy, path, expires, client_ip)):
        raise Forbidden("invalid playback token")
    if not request_path.startswith(path):
        raise Forbidden("playback token not valid for this path")
    if now > expires:
        raise Forbidden("playback token expired")
    return Grant(_carry(params))


def check(policy: Policy, path: str, query: Sequence[tuple[str, str]],
          client_ip: str | None, now: int) -> Grant:
    """Validate the token of a request for ``path`` at Unix second ``now``.

    ``Forbidden`` (with a short reason that names neither the secret nor the expected
    hash) when it is missing, malformed, wrong or outside its time window.
    """
    if isinstance(policy, HmacPolicy):
        return check_hmac(policy, path, split_path(path), query, client_ip, now)
    sp = split_path(path, policy.instance)
    if sp is None:
        raise Forbidden("no stream in path")
    return check_wowza(policy, sp, query, client_ip, now)


# -- node to node ----------------------------------------------------------------------

PEER_HEADER = "X-Sidecar-Peer-Auth"
PEER_TTL = 60


def peer_auth(secret: str, path: str, now: int, ttl: int = PEER_TTL) -> str:
    """``X-Sidecar-Peer-Auth`` for a peer fetch of ``path``: ``{expires}.{mac}``.

    Nodes fetch missing segments from each other without a player's token (and from
    another address than the player's): they prove they hold the shared secret instead,
    for this path and a minute. ``path`` is compared without its leading ``/``.
    """
    expires = now + ttl
    message = f"peer\n{path.strip('/')}\n{expires}"
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return f"{expires}.{_b64url(mac, pad=False)}"


def check_peer_auth(secret: str, path: str, value: str, now: int) -> bool:
    expires_text, _, sent = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or now > int(expires_text):
        return False
    expected = peer_auth(secret, path, int(expires_text), 0)
    return _same(sent, expected.partition(".")[2])


# -- carrying the token into child URIs -------------------------------------------------

def _with_query(uri: str, query: str) -> str:
    if not query or "://" in uri or uri.startswith("data:"):
        return uri
    return uri + ("&" if "?" in uri else "?") + query


def carry_hls(text: str, query: str) -> str:
    """Append ``query`` to every URI of an HLS playlist: URI lines and ``URI="..."``."""
    if not query:
        return text
    out = []
    for line in text.split("\n"):
        if line.startswith("#"):
            line = _URI_ATTR.sub(lambda m: f'URI="{_with_query(m.group(1), query)}"', line)
        elif line.strip():
            line = _with_query(line, query)
        out.append(line)
    return "\n".join(out)


def carry_mpd(text: str, query: str) -> str:
    """Append ``query`` to every ``SegmentTemplate@media`` and ``@initialization``.

    dash.js (like every DASH client) expands ``$Time$``/``$Number$`` in the template and
    requests the result as a relative URL, query included. ``UTCTiming`` is left alone
    (``/time`` needs no token).
    """
    if not query:
        return text
    escaped = query.replace("&", "&amp;")

    def url(a: re.Match[str]) -> str:
        sep = "&amp;" if "?" in a.group(2) else "?"
        return f'{a.group(1)}="{a.group(2)}{sep}{escaped}"'

    def template(m: re.Match[str]) -> str:
        return _TEMPLATE_URL.sub(url, m.group(0))

    return _TEMPLATE.sub(template, text)


def carry(body: str, media_type: str, query: str) -> str:
    """The manifest ``body`` with the token carried into its child URIs."""
    if "dash+xml" in media_type:
        return carry_mpd(body, query)
    if "mpegurl" in media_type.lower():
        return carry_hls(body, query)
    return body
