"""Errors of the contract package."""

from __future__ import annotations


class ContractError(Exception):
    """Root of contract errors: a record that does not follow the framebus contract."""


class CodecError(ContractError):
    """A Kafka record that is not a valid framebus CloudEvent; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
