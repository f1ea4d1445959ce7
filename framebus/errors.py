"""The root of every error framebus raises on purpose, in the SDK and in the services."""

from __future__ import annotations


class FramebusError(Exception):
    """Every error a framebus component raises on purpose; third-party errors are wrapped ``from exc``."""


class ConfigurationError(FramebusError):
    """Settings that cannot work together, a topic the catalogue does not name, or a missing tool."""


class KafkaAdapterError(FramebusError):
    """Kafka refused or failed an operation framebus asked for."""


class SubmitError(FramebusError):
    """The broker did not acknowledge a record within the deadline; nothing was accepted."""
