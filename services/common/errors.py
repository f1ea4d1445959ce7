"""Service errors. The root and the Kafka and configuration errors are the SDK's
(``framebus.errors``), so a caller catches one hierarchy whichever side raised."""

from __future__ import annotations

from framebus.errors import ConfigurationError, FramebusError, KafkaAdapterError

__all__ = ["ConfigurationError", "FramebusError", "KafkaAdapterError", "StorageError"]


class StorageError(FramebusError):
    """The object store refused or failed an operation framebus asked for."""
