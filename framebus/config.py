"""The settings a producer needs, read from ``FRAMEBUS_*`` environment variables.

The services' ``Settings`` extends these, so a variable means the same everywhere.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from framebus.errors import ConfigurationError
from framebus.schemas.models import DEFAULT_MODEL
from framebus.schemas.state import ModelName
from framebus.schemas.topics import BY_NAME

LOCAL_HOST = "127.0.0.1"


def blank_is_unset(value: object) -> object:
    """An empty FRAMEBUS_* endpoint variable means "not set" (start a local server)."""
    return None if isinstance(value, str) and not value.strip() else value


class ClientSettings(BaseSettings):
    """Where Kafka is and who the client acts for."""

    model_config = SettingsConfigDict(env_prefix="FRAMEBUS_", env_file=None, frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="Bootstrap servers of an existing cluster; unset = start a local broker.")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Port of the local broker.")
    topic_prefix: str = Field("", description="Prefix on every topic name (isolates tests and tenants of a shared cluster).")
    tenant: str = Field("demo", description="Tenant the CLI acts for when --tenant is not given.")
    submit_deadline_s: float = Field(30.0, gt=0, le=600,
                                     description="How long a submit may retry before it reports the broker unavailable.")
    webhook_http_hosts: frozenset[str] = Field(frozenset(), description="Hosts allowed plain-http webhook URLs (JSON list).")
    telemetry: str = Field(
        "auto", description="Where spans go: auto (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else off), otlp, "
                            "console, jsonl:DIR, or off. A producer's traceparent travels on either way.")
    default_model: ModelName = Field(
        DEFAULT_MODEL, description="Model of a request that names none, and the one `framebus worker` serves unless "
                                   "told otherwise; a request's unset size, frames and steps are that model's own.")

    _blank_bootstrap_is_unset = field_validator("kafka_bootstrap", mode="before")(blank_is_unset)

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property  # not cached: model_copy(update=...) would carry a stale value over
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{LOCAL_HOST}:{self.kafka_port}"

    def request_context(self) -> dict:
        """The validation context for requests built or read here: the stack's default model and
        the hosts allowed plain-http webhooks."""
        return {"default_model": self.default_model, "webhook_http_hosts": self.webhook_http_hosts}

    def topic(self, name: str) -> str:
        """The full name of catalogue topic ``name`` under this deployment's prefix.

        Only catalogue names are accepted: a typo would otherwise read an empty topic forever.
        """
        if name not in BY_NAME:
            raise ConfigurationError(f"`{name}` is not a framebus topic; the catalogue (framebus.schemas.topics) "
                                     f"names {', '.join(sorted(BY_NAME))}")
        return f"{self.topic_prefix}{name}"
