"""One small exception hierarchy; the web layer maps these to HTTP status codes."""

from __future__ import annotations


class SidecarError(Exception):
    """Base class for every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """Bad configuration: a malformed stream spec, option or file."""


class InputError(SidecarError):
    """An input could not be opened or read."""


class StoreError(SidecarError):
    """The timeline store failed or is unreachable."""


class NotFound(SidecarError):
    """A stream, playlist or segment that does not exist (HTTP 404)."""


class BadRequest(SidecarError):
    """A malformed name or path (HTTP 400)."""


class Forbidden(SidecarError):
    """A missing, malformed, invalid or expired playback token (HTTP 403)."""
