"""Tenant administration: tenants and their API keys as events on framebus.tenants.

The compacted topic holds each tenant's full current settings under its id; every
change publishes a new full record, so the latest record is the truth.
"""

from __future__ import annotations

import base64
import secrets
import uuid

from framebus.client import FramebusClient
from framebus.kafka import read_latest
from framebus.schemas.codec import decode_event
from framebus.schemas.events import LedgerCredited, TenantStorage, TenantUpdated, utc_now
from framebus.schemas.webhooks import SigningKeys, WebhookSecrets
from framebus.services.common.errors import FramebusError
from framebus.services.gateway.keys import IssuedKey, issue_key
from framebus.signing import new_key

TENANTS_TOPIC = "framebus.tenants"
SECRETS_TOPIC = "framebus.webhooks.secrets"
SIGNING_KEYS_TOPIC = "framebus.signing.keys"


class TenantError(FramebusError):
    pass


class TenantAdmin:
    def __init__(self, client: FramebusClient) -> None:
        self.client = client
        self.settings = client.settings

    def get(self, tenant_id: str) -> TenantUpdated | None:
        record = read_latest(self.settings.bootstrap_servers, self.settings.topic(TENANTS_TOPIC), tenant_id)
        if record is None:
            return None
        event = decode_event(record.headers, record.value).event
        return event if isinstance(event, TenantUpdated) else None

    def save(self, tenant: TenantUpdated) -> TenantUpdated:
        self.client.publish(tenant, TENANTS_TOPIC).get(timeout=self.settings.submit_deadline_s)
        return tenant

    def create(self, tenant_id: str, *, display_name: str = "", credit_limit_tokens: float = 0.0,
               submissions_per_minute: int | None = None) -> TenantUpdated:
        if self.get(tenant_id) is not None:
            raise TenantError(f"tenant {tenant_id!r} already exists")
        return self.save(TenantUpdated(tenant_id=tenant_id, display_name=display_name,
                                       credit_limit_tokens=credit_limit_tokens,
                                       submissions_per_minute=submissions_per_minute))

    def issue_key(self, tenant_id: str) -> IssuedKey:
        tenant = self.get_existing(tenant_id)
        issued = issue_key()
        self.save(tenant.model_copy(update={"api_keys": (*tenant.api_keys, issued.record), "updated_at": utc_now()}))
        return issued

    def revoke_key(self, tenant_id: str, key_id: str) -> TenantUpdated:
        tenant = self.get_existing(tenant_id)
        if key_id not in {k.key_id for k in tenant.api_keys}:
            raise TenantError(f"tenant {tenant_id!r} has no key {key_id!r}")
        keys = tuple(k.model_copy(update={"revoked": True}) if k.key_id == key_id else k for k in tenant.api_keys)
        return self.save(tenant.model_copy(update={"api_keys": keys, "updated_at": utc_now()}))

    def set_storage(self, tenant_id: str, storage: TenantStorage | None) -> TenantUpdated:
        """Point the tenant's videos at its own bucket (None: back to framebus's)."""
        tenant = self.get_existing(tenant_id)
        return self.save(tenant.model_copy(update={"storage": storage, "updated_at": utc_now()}))

    def credit(self, tenant_id: str, tokens: float, *, reason: str = "credit", actor: str = "admin") -> LedgerCredited:
        """Add prepaid tokens to a tenant's balance (an entry on framebus.ledger)."""
        self.get_existing(tenant_id)
        if tokens <= 0:
            raise TenantError(f"`tokens` must be positive but is {tokens:g}")
        entry = LedgerCredited(tenant_id=tenant_id, entry_id=f"credit-{uuid.uuid4().hex}", tokens=tokens,
                               reason=reason, actor=actor)
        self.client.publish(entry, "framebus.ledger").get(timeout=self.settings.submit_deadline_s)
        return entry

    def rotate_webhook_secret(self, tenant_id: str, *, keep_previous: bool = True) -> WebhookSecrets:
        """Issue a new webhook signing secret (whsec_..., first in the returned secrets: show it once).
        With ``keep_previous`` the newest old one keeps signing too, so receivers can switch over
        without missing a delivery."""
        fresh = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        kept = self._previous(SECRETS_TOPIC, tenant_id, WebhookSecrets, "secrets") if keep_previous else ()
        rotated = WebhookSecrets(tenant_id=tenant_id, secrets=(fresh, *kept))
        self.client.publish(rotated, SECRETS_TOPIC).get(timeout=self.settings.submit_deadline_s)
        return rotated

    def rotate_signing_key(self, tenant_id: str, *, keep_previous: bool = True) -> SigningKeys:
        """Issue a new key for signing the tenant's Kafka requests (fbsk_..., first: show it once). With
        ``keep_previous`` the newest old one stays valid, so producers can switch over without a refusal."""
        kept = self._previous(SIGNING_KEYS_TOPIC, tenant_id, SigningKeys, "keys") if keep_previous else ()
        rotated = SigningKeys(tenant_id=tenant_id, keys=(new_key(), *kept))
        self.client.publish(rotated, SIGNING_KEYS_TOPIC).get(timeout=self.settings.submit_deadline_s)
        return rotated

    def _previous(self, topic: str, tenant_id: str, model: type, field: str) -> tuple[str, ...]:
        """The newest of a tenant's current secrets on ``topic`` (none before the first rotation)."""
        self.get_existing(tenant_id)
        record = read_latest(self.settings.bootstrap_servers, self.settings.topic(topic), tenant_id)
        if record is None or record.value is None:
            return ()
        event = decode_event(record.headers, record.value).event
        return getattr(event, field)[:1] if isinstance(event, model) else ()

    def get_existing(self, tenant_id: str) -> TenantUpdated:
        tenant = self.get(tenant_id)
        if tenant is None:
            raise TenantError(f"no tenant {tenant_id!r}; create it with `framebus tenants create {tenant_id}`")
        return tenant
