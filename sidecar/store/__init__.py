"""Timeline stores: where nodes agree on epochs and record who published which segment."""

from __future__ import annotations

from sidecar.store.base import NodeInfo, TimelineStore, open_store

__all__ = ["NodeInfo", "TimelineStore", "open_store"]
