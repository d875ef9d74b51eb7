"""A small fake Wowza Streaming Engine REST API (no real WSE can run here).

Built from WSE's published OpenAPI description (repository ``api-evangelist/wowza``, file
``openapi/wowza-streaming-engine-openapi.yml``, converted from WSE's own Swagger 1.2), not
from a running server: ``GET /v2/servers/{serverName}/vhosts/{vhostName}/applications/
{appName}/instances/{instanceName}`` answers an ``InstanceConfig`` (``name``,
``serverName``, ``incomingStreams`` of ``IncomingStreamConfig`` with ``name``,
``isConnected``, ``sourceIp``, ``applicationInstance``, ...); unknown applications 404.
Security schemes as described (``basicAuth``, ``digestAuth``) plus ``none``: WSE's
``<AuthenticationMethod>``. Digest is RFC 7616 MD5 with ``qop=auth``. It is a real HTTP
server on 127.0.0.1 with a free port, in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REALM = "Wowza Media Systems"
_PATH = re.compile(r"^/v2/servers/_defaultServer_/vhosts/_defaultVHost_/applications/"
                   r"([^/]+)/instances/_definst_$")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class FakeWowzaRest:
    """``auth``: ``none``, ``basic`` or ``digest``; ``streams``: app -> {name: connected}."""

    def __init__(self, auth: str = "digest", user: str = "admin",
                 password: str = "secret") -> None:
        self.auth, self.user, self.password = auth, user, password
        self.streams: dict[str, dict[str, bool]] = {}
        self.garbage = False  # answer 200 with a body that is not an InstanceConfig
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization scheme)
        self._nonces: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeWowzaRest:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set_streams(self, app: str, streams: dict[str, bool]) -> None:
        self.streams[app] = dict(streams)

    # -- request handling --------------------------------------------------------------

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        given = h.headers.get("Authorization", "")
        if self.auth == "none":
            return True
        if self.auth == "basic" and given.startswith("Basic "):
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return secrets.compare_digest(given[6:].strip(), expected)
        if self.auth == "digest" and given.startswith("Digest "):
            f = dict(re.findall(r'(\w+)="?([^",]*)"?', given[7:]))
            if f.get("nonce") not in self._nonces or f.get("username") != self.user:
                return False
            ha1 = _md5(f"{self.user}:{REALM}:{self.password}")
            ha2 = _md5(f"GET:{f.get('uri', '')}")
            want = _md5(f"{ha1}:{f['nonce']}:{f.get('nc', '')}:{f.get('cnonce', '')}:"
                        f"{f.get('qop', '')}:{ha2}")
            return f.get("uri") == h.path and secrets.compare_digest(f.get("response", ""),
                                                                     want)
        return False

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        scheme = h.headers.get("Authorization", "").split(" ", 1)[0] or None
        self.requests.append((h.path, scheme))
        if not self._authorized(h):
            if self.auth == "basic":
                challenge = f'Basic realm="{REALM}"'
            else:
                nonce = secrets.token_hex(16)
                self._nonces.add(nonce)
                challenge = (f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", '
                             'algorithm=MD5')
            self._send(h, 401, b"<html>401 Unauthorized</html>",
                       {"WWW-Authenticate": challenge}, "text/html")
            return
        m = _PATH.match(h.path)
        app = m.group(1) if m else None
        if app is None or app not in self.streams:
            self._send(h, 404, json.dumps({"success": False, "message":
                                           "Application not found"}).encode())
            return
        if self.garbage:
            self._send(h, 200, b'{"incomingStreams": "nope"')
            return
        body = {
            "serverName": "_defaultServer_", "version": "1", "name": "_definst_",
            "incomingStreams": [
                {"applicationInstance": "_definst_", "name": name, "serverName":
                 "_defaultServer_", "sourceIp": "rtmp://203.0.113.7:51234",
                 "isConnected": connected, "isRecordingSet": False, "isStreamManagerStream":
                 False, "isPublishedToVOD": False, "isPTZEnabled": False,
                 "ptzPollingInterval": 2000, "ptzPollingIntervalMinimum": 1000,
                 "version": "1"}
                for name, connected in self.streams[app].items()],
            "outgoingStreams": [], "recorders": [], "streamGroups": [],
        }
        self._send(h, 200, json.dumps(body).encode())

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
