"""Ingest: blocking sources in their own threads, bridged to asyncio with an end marker."""

from __future__ import annotations

from sidecar.ingest.reader import END, Reader, Source, open_source

__all__ = ["END", "Reader", "Source", "open_source"]
