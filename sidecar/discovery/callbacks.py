"""nginx-rtmp and SRS publish callbacks: who may call, and what they say.

nginx-rtmp (``ngx_rtmp_notify_module``) POSTs form-encoded ``call=publish|publish_done``,
``app``, ``name``, ``addr``, ... followed by the publisher's own query string, so a
publisher can append a second ``name=``: the first value of each field is the one nginx
wrote. SRS ``http_hooks`` POST JSON ``{"action": "on_publish"|"on_unpublish", "app",
"stream", "ip", ...}``.

The shared secret is read only from the callback URL's query (``?secret=``) or the
``X-Sidecar-Secret`` header, never from the body, which the publisher partly controls.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sidecar.discovery.manager import Refused, Unauthorized

SECRET_HEADER = "x-sidecar-secret"


@dataclass(frozen=True, slots=True)
class Event:
    """A publish (``start``) or its end, for ``app/name``."""

    start: bool
    app: object
    name: object
    addr: str | None = None


class Gate:
    """Who may call the callbacks: an optional shared secret and client networks."""

    def __init__(self, secret: str | None, allow: Sequence[str]) -> None:
        self.secret = secret
        try:
            self.networks = tuple(ipaddress.ip_network(a.strip(), strict=False)
                                  for a in allow if a.strip())
        except ValueError as exc:
            raise ValueError(f"discovery allow-list: {exc}") from exc

    def check(self, client: str | None, query: Mapping[str, str],
              headers: Mapping[str, str]) -> None:
        """``Unauthorized`` unless the caller's address and secret are acceptable."""
        if self.networks:
            try:
                ip = ipaddress.ip_address((client or "").split("%", 1)[0])
            except ValueError:
                raise Unauthorized(f"callback from {client!r}: not an IP address") from None
            if not any(ip in net for net in self.networks):
                raise Unauthorized(f"callback from {ip}: not in the discovery allow-list")
        if self.secret is not None:
            given = query.get("secret") or headers.get(SECRET_HEADER) or ""
            if not hmac.compare_digest(given.encode(), self.secret.encode()):
                raise Unauthorized("callback without the discovery secret")


def _first(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def parse_nginx(body: bytes, call: str | None = None) -> Event:
    """An nginx-rtmp ``on_publish``/``on_publish_done`` body (``call`` from the route)."""
    try:
        fields = _first(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                  strict_parsing=False, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"malformed callback body: {exc}") from exc
    call = call or fields.get("call")
    if call not in ("publish", "publish_done"):
        raise Refused(f"callback call {call!r}: expected publish or publish_done")
    return Event(call == "publish", fields.get("app"), fields.get("name"), fields.get("addr"))


def parse_srs(body: bytes) -> Event:
    """An SRS ``http_hooks`` ``on_publish``/``on_unpublish`` JSON body."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"malformed SRS callback: {exc}") from exc
    if not isinstance(data, dict):
        raise Refused("malformed SRS callback: not a JSON object")
    action = data.get("action")
    if action not in ("on_publish", "on_unpublish"):
        raise Refused(f"SRS action {action!r}: expected on_publish or on_unpublish")
    ip = data.get("ip")
    return Event(action == "on_publish", data.get("app"), data.get("stream"),
                 ip if isinstance(ip, str) else None)
