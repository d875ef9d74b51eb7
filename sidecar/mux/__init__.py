"""Deterministic muxers: one segment in, the same bytes out on every node."""
