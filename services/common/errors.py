"""The root of framebus service errors; third-party errors are wrapped ``from exc``."""

from __future__ import annotations


class FramebusError(Exception):
    """Every error a framebus service raises on purpose."""


class ConfigurationError(FramebusError):
    """Settings that cannot work together, or a required tool that is missing."""


class KafkaAdapterError(FramebusError):
    """Kafka refused or failed an operation framebus asked for."""


class StorageError(FramebusError):
    """The object store refused or failed an operation framebus asked for."""
