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


# --- what a client call can end in (both transports raise these) --------------------------

class ClientError(FramebusError):
    """A call the service refused or could not answer; ``status_code`` is the HTTP one, if any."""

    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code if status_code is not None else type(self).status_code
        self.code = code


class AuthenticationError(ClientError):
    """The API key is missing, malformed, revoked or unknown (HTTP 401)."""

    status_code = 401


class NotFoundError(ClientError):
    """No such generation (or batch) for this tenant, or it has no video yet (HTTP 404)."""

    status_code = 404


class ConflictError(ClientError):
    """The request id was used with another body, or the generation has already finished (HTTP 409)."""

    status_code = 409


class InvalidRequestError(ClientError):
    """The request did not validate; ``fields`` names each problem (HTTP 413, 422)."""

    status_code = 422

    def __init__(self, message: str, *, fields: list[dict] | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.fields = fields or []


class RateLimitedError(ClientError):
    """Too many submissions; retried automatically until the client's retries run out (HTTP 429)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class UnavailableError(ClientError):
    """The service (or its Kafka or S3) could not be reached; retried automatically (HTTP 5xx, network)."""

    status_code = 503


class WaitTimeout(FramebusError, TimeoutError):
    """``wait`` or ``events`` ran out of time; the generation goes on and can be waited for again."""
