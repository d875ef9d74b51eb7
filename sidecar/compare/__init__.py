"""``sidecar compare``: are these origins interchangeable behind a round-robin balancer?

``poll`` runs the polls and downloads, ``parse`` turns playlists and MPDs into listings,
``analyze`` judges them (pure), ``media`` reads segment timestamps, ``report`` prints and
writes the result, ``command`` ties them together for the CLI.
"""

from __future__ import annotations

from sidecar.compare.command import execute, parse_header, parse_query
from sidecar.compare.model import CompareError
from sidecar.compare.poll import CompareConfig

__all__ = ["CompareConfig", "CompareError", "execute", "parse_header", "parse_query"]
