"""What a batch looks like from outside: submitted, its progress, finished. One fold, read by
`framebus batch status|list` and `GET /v1/batches/{id}` alike.

It folds framebus.batches (every record: a batch's submission and completion share its key)
and framebus.batches.progress (compacted: the tracker's latest count of each batch's lines).
Neither grows with the number of requests, so a query costs the same at line 10 and line
20,000, during the run and after it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from framebus.schemas.codec import decode_event
from framebus.schemas.events import BatchCompleted, BatchCounts, BatchProgress, BatchSubmitted


@dataclass(frozen=True)
class BatchSummary:
    submitted: BatchSubmitted
    counts: BatchCounts
    completed: BatchCompleted | None

    @property
    def state(self) -> str:
        if self.completed is None:
            return "running"
        return "expired" if self.completed.expired else "finished"

    @property
    def batch_id(self) -> str:
        return self.submitted.batch_id

    @property
    def submitted_at(self) -> datetime:
        return self.submitted.submitted_at


class BatchTable:
    """Bulk jobs: what was submitted, how far each got, what finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted: dict[str, BatchSubmitted] = {}
        self.completed: dict[str, BatchCompleted] = {}
        self.progress: dict[str, BatchProgress] = {}

    def apply(self, event) -> None:
        with self._lock:
            if isinstance(event, BatchSubmitted):
                # The first submission stands: a resumed one never moves the batch's start or deadline.
                self.submitted.setdefault(event.batch_id, event)
            elif isinstance(event, BatchCompleted):
                self.completed[event.batch_id] = event
            elif isinstance(event, BatchProgress):
                self.progress[event.batch_id] = event

    def apply_record(self, record) -> None:
        if record.value is not None:
            self.apply(decode_event(record.headers, record.value).event)

    def summary(self, batch_id: str) -> BatchSummary | None:
        with self._lock:
            submitted = self.submitted.get(batch_id)
            if submitted is None:
                return None
            done, progress = self.completed.get(batch_id), self.progress.get(batch_id)
        if done is not None:
            counts = done.counts
        elif progress is not None:
            counts = progress.counts
        else:  # the tracker has not counted it yet
            counts = BatchCounts(total=submitted.accepted, queued=submitted.accepted, rejected=submitted.rejected)
        return BatchSummary(submitted, counts, done)

    def of_tenant(self, tenant_id: str) -> list[BatchSummary]:
        """A tenant's batches, newest first."""
        with self._lock:
            ids = [b.batch_id for b in self.submitted.values() if b.tenant_id == tenant_id]
        found = [summary for batch_id in ids if (summary := self.summary(batch_id)) is not None]
        return sorted(found, key=lambda s: s.submitted_at, reverse=True)


def read_batches(settings) -> BatchTable:
    """The fold, read once from Kafka (the CLI; services follow the topics instead)."""
    from framebus.kafka import read_all, read_since

    table = BatchTable()
    for record in read_since(settings.bootstrap_servers, settings.topic("framebus.batches"), 0, timeout_s=60):
        table.apply_record(record)
    for record in read_all(settings.bootstrap_servers, settings.topic("framebus.batches.progress"),
                           timeout_s=60).values():
        table.apply_record(record)
    return table


def read_batch(settings, batch_id: str) -> BatchTable:
    """One batch's records only: the partition its id keys on, of each topic (what `batch status`
    re-reads while it follows a batch), never the whole history of every batch."""
    from framebus.kafka import read_key

    table = BatchTable()
    for topic in ("framebus.batches", "framebus.batches.progress"):
        for record in read_key(settings.bootstrap_servers, settings.topic(topic), batch_id, timeout_s=60):
            table.apply_record(record)
    return table
