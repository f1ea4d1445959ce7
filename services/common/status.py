"""Request status folded from framebus.status: the latest state of each (tenant, request).

Used by the gateway (answers status queries) and the scheduler (dedupes across restarts).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from framebus.schemas.codec import decode_event
from framebus.schemas.events import StatusChanged, furthest


class StatusTable:
    def __init__(self, on_change: Callable[[StatusChanged], None] | None = None, *, keep_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``on_change`` sees each row whose state moves (the gateway's event streams follow it).

        ``keep_s``: forget a row once its latest state is older than this (the topic's retention),
        so a long-running table holds what a freshly started one would read, not all history.
        None: keep every row."""
        self._lock = threading.Lock()
        # In the order rows last changed, so the stalest are first and forgetting them is cheap.
        self._rows: OrderedDict[tuple[str, str], StatusChanged] = OrderedDict()
        self.on_change = on_change
        self.keep_s = keep_s
        self.clock = clock

    def apply(self, status: StatusChanged) -> None:
        """Keep the furthest state (a late `accepted` never hides progress; a second terminal
        record never replaces the first), with what the request's receipt needs carried forward."""
        key = (status.tenant_id, status.request_id)
        with self._lock:
            before = self._rows.get(key)
            after = self._rows[key] = furthest(before, status)
            self._rows.move_to_end(key)
            if self.keep_s is not None:
                self._forget_older_than(self.clock() - self.keep_s)
        if self.on_change is not None and (before is None or before.state is not after.state):
            self.on_change(after)

    def _forget_older_than(self, cutoff: float) -> None:
        """Drop the stalest rows while they are older than ``cutoff`` (lock held). Rows arrive
        roughly in time order, so this stops at the first young one: O(rows forgotten)."""
        while self._rows:
            key, row = next(iter(self._rows.items()))
            if row.updated_at.timestamp() >= cutoff:
                return
            del self._rows[key]

    def apply_record(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, StatusChanged):
            self.apply(event)

    def get(self, tenant_id: str, request_id: str) -> StatusChanged | None:
        with self._lock:
            found = self._rows.get((tenant_id, request_id))
        if found is not None and self.keep_s is not None and found.updated_at.timestamp() < self.clock() - self.keep_s:
            return None  # past the retention: as unknown as on a replica started now
        return found

    def __len__(self) -> int:
        return len(self._rows)

    def is_finished(self, tenant_id: str, request_id: str) -> bool:
        found = self.get(tenant_id, request_id)
        return found is not None and found.state.is_terminal
