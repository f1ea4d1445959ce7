"""The settings a producer needs, read from ``FRAMEBUS_*`` environment variables.

The services' ``Settings`` extends these, so a variable means the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from framebus.errors import ConfigurationError
from framebus.schemas.models import DEFAULT_MODEL
from framebus.schemas.state import ModelName
from framebus.schemas.topics import BY_NAME
from framebus.security import KafkaSecurity, Mechanism, Protocol, register
from framebus.signing import SigningKeyError, key_bytes

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
    status_retention_days: int = Field(
        30, gt=0, description="Days a request's status is kept: the retention of framebus.status (compacted, then "
                              "deleted) and the window a gateway reads at start; an older request is unknown "
                              "(404), and its request_id may be used again.")

    default_model: ModelName = Field(
        DEFAULT_MODEL, description="Model of a request that names none, and the one `framebus worker` serves unless "
                                   "told otherwise; a request's unset size, frames and steps are that model's own.")

    # A secured cluster (managed Kafka: Confluent Cloud, MSK, Aiven, ...). Applied to every client
    # of the process alike (framebus.security); the password is never logged.
    kafka_security_protocol: Protocol = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: Mechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (SASL_*).")
    kafka_sasl_username: str | None = Field(None, description="SASL user name (OAUTHBEARER: the OAuth client id).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (OAUTHBEARER: the OAuth client secret); never logged.")
    kafka_sasl_oauth_token_url: str | None = Field(
        None, description="OAUTHBEARER: the identity provider's token endpoint, where the client id and secret "
                          "are exchanged for tokens (client-credentials grant).")
    kafka_sasl_oauth_scope: str | None = Field(None, description="OAUTHBEARER: the scope to ask tokens for, if the "
                                                                 "provider wants one.")
    kafka_ssl_cafile: Path | None = Field(None, description="PEM file of the CA(s) to trust; unset: the system's.")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate, where the cluster asks for one.")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM key of the client certificate.")
    kafka_ssl_check_hostname: bool = Field(True, description="Check the broker's certificate names its host.")

    # Proof of who publishes on the Kafka path (framebus.signing): a tenant's own key, or the
    # services' key for the gateway, tracker and workers, which act for any tenant.
    signing_key: SecretStr | None = Field(
        None, description="The tenant's key for signing Kafka requests and cancels (fbsk_..., from `framebus tenants "
                          "signing-key`); a client given one signs everything it publishes.")
    service_signing_key: SecretStr | None = Field(
        None, description="The services' shared signing key (fbsk_..., `framebus acl service-key`): the gateway, tracker "
                          "and workers sign with it and the scheduler accepts it for any tenant. Keep it as secret as "
                          "the Kafka passwords.")

    _blank_bootstrap_is_unset = field_validator("kafka_bootstrap", mode="before")(blank_is_unset)

    @model_validator(mode="after")
    def _security_complete(self):
        """Refuse, in one line each, settings that could only fail at the first connection."""
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL"):
            missing = [name for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                       if getattr(self, name) is None]
            if self.kafka_sasl_mechanism == "OAUTHBEARER" and not self.kafka_sasl_oauth_token_url:
                missing.append("kafka_sasl_oauth_token_url")
            if missing:
                raise ValueError(f"FRAMEBUS_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                 + ", ".join(f"FRAMEBUS_{name.upper()}" for name in missing))
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"FRAMEBUS_{name.upper()}={path}: no such file")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("FRAMEBUS_KAFKA_SSL_CERTFILE and FRAMEBUS_KAFKA_SSL_KEYFILE go together")
        for name in ("signing_key", "service_signing_key", "service_signing_key_previous"):  # the last: Settings'
            if (key := getattr(self, name, None)) is not None:
                try:
                    key_bytes(key.get_secret_value())
                except SigningKeyError as exc:
                    raise ValueError(f"FRAMEBUS_{name.upper()}: {exc}") from None
        return self

    @property
    def publishing_key(self) -> str | None:
        """The key this process signs with: the tenant's own when it has one, else the services'."""
        key = self.signing_key or self.service_signing_key
        return key.get_secret_value() if key is not None else None

    @property
    def kafka_security(self) -> KafkaSecurity:
        path = (lambda p: str(p) if p is not None else None)
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
        return KafkaSecurity(protocol=self.kafka_security_protocol, mechanism=self.kafka_sasl_mechanism,
                             username=self.kafka_sasl_username, password=password,
                             cafile=path(self.kafka_ssl_cafile), certfile=path(self.kafka_ssl_certfile),
                             keyfile=path(self.kafka_ssl_keyfile), check_hostname=self.kafka_ssl_check_hostname,
                             token_url=self.kafka_sasl_oauth_token_url, scope=self.kafka_sasl_oauth_scope)

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property  # not cached: model_copy(update=...) would carry a stale value over
    def bootstrap_servers(self) -> str:
        """The cluster's address; handing it out registers how to reach it (framebus.security),
        so whichever client is built for it next connects the way these settings say."""
        bootstrap = self.kafka_bootstrap or f"{LOCAL_HOST}:{self.kafka_port}"
        register(bootstrap, self.kafka_security)
        return bootstrap

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
