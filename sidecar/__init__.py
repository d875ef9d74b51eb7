"""Segment-synchronizing packager sidecar: grid-aligned, byte-identical HLS on every node."""

from __future__ import annotations

__version__ = "0.1.0"
