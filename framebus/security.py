"""How to reach a secured Kafka: TLS and SASL, the same for every client library framebus uses.

Security belongs to a cluster address: settings register it for their bootstrap servers
when they are built (``ClientSettings``), and every client factory (kafka-python,
aiokafka, faust, the raw health probe) asks ``security_for(bootstrap)``. So a process that
reads ``FRAMEBUS_KAFKA_*`` once connects every one of its clients the same way, and no
call site can forget. The password never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None  # PEM; unset: the system's trusted CAs
    certfile: str | None = None  # PEM client certificate, for clusters that ask for one (mTLS)
    keyfile: str | None = None
    check_hostname: bool = True
    # OAUTHBEARER: ``username`` and ``password`` are the OAuth client's id and secret, exchanged
    # at ``token_url`` for tokens (framebus.oauth); the other mechanisms ignore these.
    token_url: str | None = None
    scope: str | None = None

    @property
    def uses_oauth(self) -> bool:
        return self.uses_sasl and self.mechanism == "OAUTHBEARER"

    @property
    def tokens(self):
        """This cluster's one token source (shared by every client of the process)."""
        from framebus.oauth import ClientCredentials

        key = (self.token_url, self.username, self.password, self.scope)
        with _lock:
            if key not in _token_sources:
                _token_sources[key] = ClientCredentials(self.token_url or "", self.username or "", self.password or "",
                                                        self.scope)
            return _token_sources[key]

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """For logs and errors: what is used, never the secret."""
        parts = [self.protocol]
        if self.uses_oauth:
            parts.append(f"OAUTHBEARER as client {self.username} of {self.token_url}")
        elif self.uses_sasl:
            parts.append(f"{self.mechanism} as {self.username}")
        if self.uses_tls:
            parts.append(f"CA {self.cafile or 'system'}" + (", client certificate" if self.certfile else ""))
        return ", ".join(parts)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        context.check_hostname = self.check_hostname
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def kafka_python(self) -> dict[str, Any]:
        """Options for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options.update(ssl_cafile=self.cafile, ssl_certfile=self.certfile, ssl_keyfile=self.keyfile,
                           ssl_check_hostname=self.check_hostname)
        if self.uses_oauth:
            options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=self.tokens.for_kafka_python())
        elif self.uses_sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def aiokafka(self) -> dict[str, Any]:
        """Options for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_oauth:
            options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=self.tokens.for_aiokafka())
        elif self.uses_sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def faust(self) -> dict[str, Any]:
        """``broker_credentials`` for a faust App (which hands them to aiokafka)."""
        import faust

        if self.uses_oauth:
            return {"broker_credentials": faust.OAuthCredentials(oauth_cb=self.tokens.for_aiokafka(),
                                                                 ssl_context=self.ssl_context())}
        if self.uses_sasl:
            return {"broker_credentials": faust.SASLCredentials(
                username=self.username, password=self.password, mechanism=self.mechanism,
                ssl_context=self.ssl_context())}
        if self.uses_tls:
            return {"broker_credentials": faust.SSLCredentials(self.ssl_context())}
        return {}


PLAINTEXT = KafkaSecurity()
_lock = threading.Lock()
_by_bootstrap: dict[str, KafkaSecurity] = {}
_token_sources: dict[tuple, object] = {}


def register(bootstrap: str, security: KafkaSecurity) -> None:
    with _lock:
        _by_bootstrap[bootstrap] = security


def security_for(bootstrap: str) -> KafkaSecurity:
    with _lock:
        return _by_bootstrap.get(bootstrap, PLAINTEXT)
