"""Discovery as the settings ask for it: the manager, its routes and its pollers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from sidecar.discovery.callbacks import Gate
from sidecar.discovery.manager import Discovery
from sidecar.discovery.routes import discovery_router
from sidecar.discovery.wowza import WowzaPoller
from sidecar.errors import ConfigError
from sidecar.node import Node

log = logging.getLogger(__name__)


@dataclass
class DiscoverySetup:
    discovery: Discovery
    router: APIRouter
    loops: list[Callable[[], Coroutine[Any, Any, None]]]


def discovery_for(node: Node) -> DiscoverySetup | None:
    """None when neither callbacks nor a Wowza REST server are configured."""
    s = node.settings
    if not s.discovery_callbacks and not s.wowza_rest:
        return None
    linger = (s.discovery_linger if s.discovery_linger is not None
              else float(s.window * s.segment_duration))
    disc = Discovery(node, apps=tuple(s.discovery_apps),
                     configured={spec.key for spec in s.streams}, linger=linger,
                     max_streams=s.discovery_max_streams)
    gate = None
    if s.discovery_callbacks:
        try:
            gate = Gate(s.discovery_secret.get_secret_value() if s.discovery_secret else None,
                        s.discovery_allow)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = [disc.run]
    if s.wowza_rest:
        poller = WowzaPoller(
            disc, s.wowza_rest, tuple(s.discovery_apps), user=s.wowza_user,
            password=s.wowza_password.get_secret_value() if s.wowza_password else None,
            input_template=s.wowza_input or "", interval=s.wowza_poll)
        loops.append(poller.run)
    node.discovering = True
    if gate is not None:
        log.info("discovery: callbacks at %s/discovery/nginx and /discovery/srs (apps %s, "
                 "secret %s, callers %s), input %s", s.base_url, ",".join(s.discovery_apps),
                 "required" if s.discovery_secret else "not required",
                 ",".join(s.discovery_allow) or "any", s.discovery_input)
    if s.wowza_rest:
        log.info("discovery: polling Wowza REST %s every %g s (apps %s)", s.wowza_rest,
                 s.wowza_poll, ",".join(s.discovery_apps))
    return DiscoverySetup(disc, discovery_router(disc, gate, s.discovery_input), loops)
