"""SASL/OAUTHBEARER tokens by the OAuth 2.0 client-credentials grant (RFC 6749 4.4).

What managed clusters that take OAuth expect of a client (Confluent Cloud, Aiven, Strimzi,
Kafka's own OIDC validator of KIP-768): post ``grant_type=client_credentials`` with the
client's id and secret (HTTP Basic) and an optional scope to the identity provider's token
endpoint, and present the ``access_token`` it returns. One ``ClientCredentials`` per
cluster serves every client of the process: a token is reused until a minute before it
expires, so connecting twenty clients asks the endpoint once. A refusal is one line that
names the endpoint and the client, never the secret.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from aiokafka.abc import AbstractTokenProvider as AsyncTokenProvider
from kafka.net.sasl.oauth import AbstractTokenProvider as SyncTokenProvider

from framebus.errors import KafkaAdapterError

REFRESH_BEFORE_S = 60.0  # a token this close to expiring is replaced before a connection uses it
DEFAULT_LIFETIME_S = 300.0  # when the endpoint does not say (``expires_in`` is optional)


class TokenRefused(KafkaAdapterError):
    """The identity provider would not issue a token (wrong secret, unknown client, endpoint down)."""


class ClientCredentials:
    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str | None = None, *,
                 clock=time.monotonic, timeout_s: float = 10.0) -> None:
        self.token_url, self.client_id, self.scope = token_url, client_id, scope
        self._secret = client_secret
        self.clock, self.timeout_s = clock, timeout_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetched = 0  # tokens fetched, so a test can see they are reused

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentials({self.token_url!r}, client {self.client_id!r})"

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at - REFRESH_BEFORE_S:
                self._token, lifetime = self._fetch()
                self._expires_at = self.clock() + lifetime
                self.fetched += 1
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        who = f"client {self.client_id!r} at {self.token_url}"
        try:
            answer = httpx.post(self.token_url, data=form, auth=(self.client_id, self._secret), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise TokenRefused(f"OAUTHBEARER: no token for {who}: {type(exc).__name__}: {exc}") from None
        if answer.status_code != 200:
            try:
                error = answer.json().get("error", "")
            except ValueError:
                error = ""
            raise TokenRefused(f"OAUTHBEARER: the token endpoint refused {who} "
                               f"({answer.status_code}{' ' + error if error else ''})")
        try:
            body = answer.json()
            return str(body["access_token"]), float(body.get("expires_in") or DEFAULT_LIFETIME_S)
        except (ValueError, KeyError, TypeError):
            raise TokenRefused(f"OAUTHBEARER: the token endpoint's answer for {who} has no access_token") from None

    # --- what each client library asks for -------------------------------------------------
    def for_kafka_python(self) -> SyncTokenProvider:
        return _SyncProvider(self)

    def for_aiokafka(self) -> AsyncTokenProvider:
        return _AsyncProvider(self)


class _SyncProvider(SyncTokenProvider):
    def __init__(self, source: ClientCredentials) -> None:
        super().__init__()
        self.source = source

    def token(self) -> str:
        return self.source.token()


class _AsyncProvider(AsyncTokenProvider):
    def __init__(self, source: ClientCredentials) -> None:
        self.source = source

    async def token(self) -> str:
        return await asyncio.to_thread(self.source.token)  # the endpoint is HTTP: never on the event loop
