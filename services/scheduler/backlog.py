"""The scheduler's changelog: one compacted record per live request, a tombstone when it ends.

Why a changelog rather than late offset commits: requests are decided long after they
are read (a batch request may queue for hours), and holding back a partition's
offsets for that long would replay everything after it on every restart. Instead a
request is written here (and acknowledged by Kafka) before its input offset can be
committed; a restarted scheduler reads this topic to rebuild the queue and what is in
flight, then resumes the input topics at their committed offsets. A record replayed
after a crash finds itself here (or terminal on framebus.status) and is not run twice.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from framebus.schemas.events import ADMITTED, GenerationRequest, status_key
from framebus.schemas.workers import JobDispatched, Shape
from framebus.services.scheduler.queue import QueuedRequest

BACKLOG_TOPIC = "framebus.scheduler.backlog"


class BacklogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request: GenerationRequest
    tokens: float
    shape: Shape
    enqueued_at: float  # wall-clock seconds: survives restarts, unlike a monotonic clock
    start_tag: float
    deadline: float
    seq: int
    attempt: int = 1
    job_id: str | None = None  # set once dispatched
    worker_id: str | None = None
    job_seq: int | None = None

    @classmethod
    def of(cls, entry: QueuedRequest, job: JobDispatched | None = None) -> BacklogEntry:
        return cls(request=entry.request, tokens=entry.tokens, shape=entry.shape, enqueued_at=entry.enqueued_at,
                   start_tag=entry.start_tag, deadline=entry.deadline, seq=entry.seq, attempt=entry.attempt,
                   job_id=job.job_id if job else None, worker_id=job.worker_id if job else None,
                   job_seq=job.seq if job else None)

    def queued(self) -> QueuedRequest:
        return QueuedRequest(self.request, self.tokens, self.shape, self.enqueued_at, self.start_tag, self.deadline,
                             self.seq, self.attempt)

    def key(self) -> bytes:
        return status_key(self.request.tenant_id, self.request.request_id).encode()

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> BacklogEntry:
        return cls.model_validate(json.loads(value), context=ADMITTED)  # admitted once already
