"""Requests that ended, as the scheduler needs them: to drop a replayed or resubmitted request
and to re-publish its final status to whoever resubmitted it."""

from __future__ import annotations

import json
import time

from framebus.schemas.codec import KafkaRecord
from framebus.schemas.state import RequestState

# Status records of live states, recognised without parsing (the scheduler writes two per request).
LIVE_STATE_MARKS = tuple(f'"state":"{state.value}"'.encode() for state in RequestState if not state.is_terminal)


class FinishedIndex:
    """Requests that ended, from framebus.status: their last status record, kept as it came.

    Only terminal records are kept and only their state is parsed, so following the
    busy status topic stays cheap. Records older than the dedupe window (by their Kafka
    timestamp) are dropped: a resubmission after that is a new request anyway, and the
    index would otherwise grow with every request ever finished.
    """

    def __init__(self, window_s: float = float("inf"), *, clock=time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._records: dict[tuple[str, str], tuple[float, KafkaRecord]] = {}

    def apply_record(self, record) -> None:
        if any(mark in record.value for mark in LIVE_STATE_MARKS):
            return
        now = self.clock()
        written_at = record.timestamp / 1000 if getattr(record, "timestamp", None) else now
        if now - written_at >= self.window_s:
            return
        data = json.loads(record.value)
        if RequestState(data.get("state")).is_terminal:
            self._records[(data["tenant_id"], data["request_id"])] = (written_at, KafkaRecord(
                record.key, record.value, list(record.headers)))

    def expire(self, now: float) -> None:
        self._records = {key: kept for key, kept in self._records.items() if now - kept[0] < self.window_s}

    def __len__(self) -> int:
        return len(self._records)

    def contains(self, tenant_id: str, request_id: str) -> bool:
        return (tenant_id, request_id) in self._records

    def digest(self, tenant_id: str, request_id: str) -> str | None:
        """The digest its final status carries (None for statuses written before they carried one)."""
        kept = self.record(tenant_id, request_id)
        return json.loads(kept.value).get("request_digest") if kept is not None else None

    def record(self, tenant_id: str, request_id: str) -> KafkaRecord | None:
        kept = self._records.get((tenant_id, request_id))
        return kept[1] if kept is not None else None
