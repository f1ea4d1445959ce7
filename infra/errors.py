"""Errors raised while fetching, starting or stopping local infrastructure."""

from __future__ import annotations


class InfraError(Exception):
    """Root of every infra error.

    Each error names its cause and the fix in one line, because the people who see it
    are running ``framebus up`` or the tests and want to know what to do next.
    """

    def __init__(self, cause: str, fix: str) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause} — fix: {fix}")


class FetchError(InfraError):
    """A download or build of a server failed."""


class PortInUseError(InfraError):
    """A port a server needs is held by a process framebus did not start."""


class StartupError(InfraError):
    """A server exited during startup or did not answer in time."""


class StaleStateError(InfraError):
    """Leftover data or pid files that do not match what is configured."""
