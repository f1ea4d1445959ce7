"""Request status folded from framebus.status: the latest state of each (tenant, request).

Used by the gateway (answers status queries) and the scheduler (dedupes across restarts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from framebus.schemas.codec import decode_event
from framebus.schemas.events import StatusChanged, furthest


class StatusTable:
    def __init__(self, on_change: Callable[[StatusChanged], None] | None = None) -> None:
        """``on_change`` sees each row whose state moves (the gateway's event streams follow it)."""
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], StatusChanged] = {}
        self.on_change = on_change

    def apply(self, status: StatusChanged) -> None:
        """Keep the furthest state (a late `accepted` never hides progress; a second terminal
        record never replaces the first), with what the request's receipt needs carried forward."""
        key = (status.tenant_id, status.request_id)
        with self._lock:
            before = self._rows.get(key)
            after = self._rows[key] = furthest(before, status)
        if self.on_change is not None and (before is None or before.state is not after.state):
            self.on_change(after)

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
