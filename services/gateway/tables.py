"""The gateway's view of Kafka: request status and tenants, folded from compacted topics.

Pure folds (``StatusTable.apply``, ``TenantTable.apply``) take decoded events; the
gateway feeds them from ``services.common.compacted.TopicTable`` and also applies what
it publishes itself, so a replica answers its own writes at once.
"""

from __future__ import annotations

import threading

from schemas.codec import decode_event
from schemas.events import ApiKeyRecord, StatusChanged, TenantUpdated
from schemas.state import RequestState

# Later states win; a late `accepted` (e.g. an idempotent replay) never hides progress.
_ORDER = {RequestState.ACCEPTED: 0, RequestState.QUEUED: 1, RequestState.DISPATCHED: 2, RequestState.RUNNING: 3}


class StatusTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], StatusChanged] = {}

    def apply(self, status: StatusChanged) -> None:
        key = (status.tenant_id, status.request_id)
        with self._lock:
            current = self._rows.get(key)
            if current is None or _rank(status.state) >= _rank(current.state):
                self._rows[key] = status

    def apply_record(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, StatusChanged):
            self.apply(event)

    def get(self, tenant_id: str, request_id: str) -> StatusChanged | None:
        with self._lock:
            return self._rows.get((tenant_id, request_id))

    def __len__(self) -> int:
        return len(self._rows)


def _rank(state: RequestState) -> int:
    return 10 if state.is_terminal else _ORDER[state]


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
