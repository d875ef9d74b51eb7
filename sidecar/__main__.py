from __future__ import annotations

from sidecar.cli import app

app(prog_name="sidecar")
