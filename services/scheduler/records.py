"""Turning scheduler decisions into the records other services read (pure: no Kafka calls).

Each function returns (topic, KafkaRecord) pairs; the processor runtime sends them. Keeping
this apart lets tests check exactly what a decision publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from framebus.schemas import sources
from framebus.schemas.codec import KafkaRecord, encode_event
from framebus.schemas.events import (
    ErrorInfo,
    Event,
    GenerationCancelled,
    GenerationFailed,
    GenerationRequest,
    StatusChanged,
    Timings,
    status_key,
)
from framebus.schemas.state import ErrorCode, RequestState
from framebus.schemas.workers import JobDispatched
from framebus.services.scheduler.backlog import BACKLOG_TOPIC, BacklogEntry
from framebus.services.scheduler.core import ForwardedCancel, SchedulerOutput, Terminal
from framebus.services.scheduler.queue import QueuedRequest

SOURCE = sources.SCHEDULER
Out = list[tuple[str, KafkaRecord]]


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def event(topic: str, item: Event, traceparent: str | None = None) -> tuple[str, KafkaRecord]:
    return topic, encode_event(item, source=SOURCE, traceparent=traceparent)


def backlog(entry: BacklogEntry) -> tuple[str, KafkaRecord]:
    return BACKLOG_TOPIC, KafkaRecord(entry.key(), entry.encode(), [])


def tombstone(tenant_id: str, request_id: str) -> tuple[str, KafkaRecord]:
    return BACKLOG_TOPIC, KafkaRecord(status_key(tenant_id, request_id).encode(), None, [])


def status(request: GenerationRequest, state: RequestState, *, tokens: float | None = None,
           error: ErrorInfo | None = None, timings: Timings | None = None,
           digest: str | None = None, waiting_reason: str | None = None) -> tuple[str, KafkaRecord]:
    """A status record; it carries the request's digest, so an idempotent replay is recognised in any state."""
    return event("framebus.status", StatusChanged(
        request_id=request.request_id, tenant_id=request.tenant_id, state=state, tier=request.tier, tokens=tokens,
        batch_id=request.batch_id, error=error, timings=timings or Timings(accepted_at=request.submitted_at),
        request_digest=digest or request.digest(), waiting_reason=waiting_reason))


def _timings(entry: QueuedRequest, **more) -> Timings:
    return Timings(accepted_at=entry.request.submitted_at, queued_at=_at(entry.enqueued_at), **more)


def queued(entry: QueuedRequest, waiting_reason: str | None = None) -> Out:
    return [backlog(BacklogEntry.of(entry)),
            status(entry.request, RequestState.QUEUED, tokens=entry.tokens, timings=_timings(entry),
                   digest=entry.digest, waiting_reason=waiting_reason)]


def dispatched(job: JobDispatched, entries: list[QueuedRequest]) -> Out:
    out = [event("framebus.jobs", job)]
    for request, entry in zip(job.requests, entries, strict=True):
        out.append(backlog(BacklogEntry.of(entry, job)))
        out.append(status(request, RequestState.DISPATCHED, tokens=entry.tokens, timings=_timings(entry),
                          digest=entry.digest))
    return out


def terminal(ended: Terminal, traceparent: str | None = None) -> Out:
    request = ended.request
    common = request.result_fields(Timings(accepted_at=request.submitted_at, finished_at=datetime.now(UTC)))
    error = None
    if ended.state is RequestState.CANCELLED:
        result: Event = GenerationCancelled(**common, reason=ended.message)
    else:
        error = ErrorInfo(code=ended.code or ErrorCode.INTERNAL_ERROR, message=ended.message)
        result = GenerationFailed(**common, error=error)
    return [event("framebus.results", result, traceparent), status(request, ended.state, error=error),
            tombstone(request.tenant_id, request.request_id)]


def forwarded_cancel(forward: ForwardedCancel) -> tuple[str, KafkaRecord]:
    # Keyed by worker id like the jobs, so it lands on the partition that worker reads.
    topic, record = event("framebus.jobs", forward.cancel)
    return topic, KafkaRecord(forward.worker_id.encode(), record.value, record.headers)


def for_output(out: SchedulerOutput, trace_of: Callable[[str, str], str | None] = lambda tenant, request: None) -> Out:
    """``trace_of(tenant, request id)``: the request's traceparent, carried on its result."""
    records: Out = []
    for entry in out.queued + out.requeued:
        records.extend(queued(entry, out.waiting.get(entry.key)))
    for entry in out.ledger:
        records.append(event("framebus.ledger", entry))
    for job in out.jobs:
        records.extend(dispatched(job, out.job_entries[job.job_id]))
    for ended in out.terminal:
        records.extend(terminal(ended, trace_of(ended.request.tenant_id, ended.request.request_id)))
    for forward in out.cancels:
        records.append(forwarded_cancel(forward))
    return records


def failed_for_unreadable(tenant_id: str, request_id: str, tier, reason: str, detail: str) -> Out:
    """A `failed` result for a record we could not read but whose tenant and id we know."""
    error = ErrorInfo(code=reason, message=detail[:2000])
    failed = GenerationFailed(request_id=request_id, tenant_id=tenant_id, tier=tier, error=error,
                              timings=Timings(finished_at=datetime.now(UTC)))
    status_record = event("framebus.status", StatusChanged(request_id=request_id, tenant_id=tenant_id,
                                                           state=RequestState.FAILED, tier=tier, error=error))
    return [event("framebus.results", failed), status_record]
