"""Discovery: streams started and stopped at runtime (publish callbacks, Wowza's REST API)."""

from __future__ import annotations

from sidecar.discovery.manager import Claim, Discovery, Refused, Unauthorized

__all__ = ["Claim", "Discovery", "Refused", "Unauthorized"]
