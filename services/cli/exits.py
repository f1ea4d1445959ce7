"""The `framebus` command's exit codes, in one place: `framebus --help` and the README show this table.

A script tells outcomes apart by the code alone: 2 is click's own code for a usage error, so a
bad option and an invalid request field read the same.
"""

from __future__ import annotations

import sys
from enum import IntEnum

from framebus.errors import FramebusError, SubmitError
from framebus.schemas.state import ErrorCode


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    TIMEOUT = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5
    REFUSED = 6


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "the operation failed, or the request ended failed or cancelled",
    ExitCode.USAGE: "bad arguments or invalid input (an option, a request field, a batch line under --strict)",
    ExitCode.TIMEOUT: "gave up waiting (submit --wait, batch status past --timeout-s)",
    ExitCode.NOT_FOUND: "no such request, tenant, key or batch",
    ExitCode.UNAVAILABLE: "Kafka or S3 cannot be reached or did not answer in time",
    ExitCode.REFUSED: "admission rejected the request (balance, queue full, unknown tenant or model, a reused id), the tenant "
                      "exists already, or the request has already ended",
}

# The scheduler's refusals at admission: such a request ended without being tried.
ADMISSION_REFUSALS = frozenset({ErrorCode.INVALID_REQUEST, ErrorCode.UNKNOWN_TENANT, ErrorCode.UNKNOWN_MODEL,
                                ErrorCode.DUPLICATE_REQUEST, ErrorCode.INSUFFICIENT_BALANCE, ErrorCode.QUEUE_FULL})


def exit_codes_help() -> str:
    """The table for `framebus --help`, one code a line."""
    rows = (f"  {code.value}  {code.name.lower().replace('_', ' ')}: {MEANINGS[code]}" for code in ExitCode)
    return "Exit codes:\n" + "\n".join(rows)


class NotFound(FramebusError):
    """What the command names does not exist (for the acting tenant)."""

    exit_code = ExitCode.NOT_FOUND


class Refused(FramebusError):
    """framebus will not do it as things stand (the tenant exists, the request has ended)."""

    exit_code = ExitCode.REFUSED


def client_errors() -> tuple[type[BaseException], ...]:
    """Errors a command reports in one line: framebus's own, and those of the Kafka, S3 and HTTP
    clients the command loaded (one it never imported cannot have raised, so nothing is imported here)."""
    from framebus.infra.errors import InfraError

    found: list[type[BaseException]] = [FramebusError, InfraError]
    if kafka_errors := sys.modules.get("kafka.errors"):
        found.append(kafka_errors.KafkaError)
    if boto_errors := sys.modules.get("botocore.exceptions"):
        found += [boto_errors.BotoCoreError, boto_errors.ClientError]
    if httpx := sys.modules.get("httpx"):
        found.append(httpx.HTTPError)
    return tuple(found)


def _connection_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [SubmitError]  # the broker did not acknowledge within the deadline
    if kafka_errors := sys.modules.get("kafka.errors"):
        found.append(kafka_errors.RetriableError)  # no broker, timeouts, no leader: try again later
    if boto_errors := sys.modules.get("botocore.exceptions"):
        found += [boto_errors.ConnectionError, boto_errors.ReadTimeoutError]
    if httpx := sys.modules.get("httpx"):
        found.append(httpx.TransportError)
    return tuple(found)


def unreachable(exc: BaseException | None) -> bool:
    """Whether Kafka, S3 (or a URL) could not be reached, whichever layer wrapped the client's error."""
    kinds, seen = _connection_errors(), set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


# The SDK's call errors carry the HTTP status they stand for (framebus.errors.ClientError).
HTTP_STATUS_EXITS = {401: ExitCode.REFUSED, 403: ExitCode.REFUSED, 404: ExitCode.NOT_FOUND, 409: ExitCode.REFUSED,
                     413: ExitCode.USAGE, 422: ExitCode.USAGE, 429: ExitCode.REFUSED}


def exit_code_of(exc: BaseException) -> ExitCode:
    declared = getattr(exc, "exit_code", None)
    if isinstance(declared, ExitCode):
        return declared
    if unreachable(exc):
        return ExitCode.UNAVAILABLE
    if not isinstance(exc, FramebusError):
        return ExitCode.FAILED
    if isinstance(exc, TimeoutError):  # the SDK's wait ran out of time; the request goes on
        return ExitCode.TIMEOUT
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 500:
        return ExitCode.UNAVAILABLE
    return HTTP_STATUS_EXITS.get(status, ExitCode.FAILED)
