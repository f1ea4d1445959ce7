"""The gateway's view of Kafka: tenants (and request status, shared), folded from compacted topics.

Pure folds (``StatusTable.apply``, ``TenantTable.apply``) take decoded events; the
gateway feeds them from ``services.common.compacted.TopicTable`` and also applies what
it publishes itself, so a replica answers its own writes at once.
"""

from __future__ import annotations

import threading

from framebus.schemas.codec import decode_event
from framebus.schemas.events import ApiKeyRecord, TenantUpdated
from framebus.services.batch.view import BatchTable
from framebus.services.common.status import StatusTable

__all__ = ["BatchTable", "StatusTable", "TenantTable"]


class TenantTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, TenantUpdated] = {}
        self._keys: dict[str, tuple[str, ApiKeyRecord]] = {}

    def apply(self, tenant: TenantUpdated) -> None:
        with self._lock:
            previous = self._tenants.get(tenant.tenant_id)
            if previous is not None:
                for key in previous.api_keys:
                    self._keys.pop(key.key_id, None)
            self._tenants[tenant.tenant_id] = tenant
            for key in tenant.api_keys:
                self._keys[key.key_id] = (tenant.tenant_id, key)

    def apply_record(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, TenantUpdated):
            self.apply(event)

    def tenant(self, tenant_id: str) -> TenantUpdated | None:
        with self._lock:
            return self._tenants.get(tenant_id)

    def by_key_id(self, key_id: str) -> tuple[TenantUpdated, ApiKeyRecord] | None:
        with self._lock:
            found = self._keys.get(key_id)
            return (self._tenants[found[0]], found[1]) if found else None
