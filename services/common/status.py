"""Request status folded from framebus.status: the latest state of each (tenant, request).

Used by the gateway (answers status queries) and the scheduler (dedupes across restarts).
"""

from __future__ import annotations

import threading

from framebus.schemas.codec import decode_event
from framebus.schemas.events import StatusChanged
from framebus.schemas.state import RequestState

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

    def is_finished(self, tenant_id: str, request_id: str) -> bool:
        found = self.get(tenant_id, request_id)
        return found is not None and found.state.is_terminal


def _rank(state: RequestState) -> int:
    return 10 if state.is_terminal else _ORDER[state]
