"""framebus: the importable producer SDK. See ``framebus.client``.

The names below load on first use, so importing a framebus module (the services do,
as ``framebus.services``) does not load the Kafka client with it."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framebus.client import AsyncFramebusClient, FramebusClient, Receipt
    from framebus.errors import SubmitError
    from framebus.results import GenerationStatus
    from framebus.schemas.events import GenerationRequest

__all__ = ["AsyncFramebusClient", "FramebusClient", "GenerationRequest", "GenerationStatus", "Receipt", "SubmitError"]
_HOMES = {"FramebusClient": "framebus.client", "AsyncFramebusClient": "framebus.client", "Receipt": "framebus.client",
          "SubmitError": "framebus.errors", "GenerationRequest": "framebus.schemas.events",
          "GenerationStatus": "framebus.results"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'framebus' has no attribute {name!r}")
