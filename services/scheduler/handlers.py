"""What the scheduler does with each record it reads, as pure handlers over ``SchedulerCore``.

No Kafka here: each handler takes a consumer record and the time and returns the records to
publish (``Outputs``); the processor runtime sends them, waits for the broker and commits.
Follower handlers (tenants, ledger, workers, statuses) only update state.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from opentelemetry.trace import SpanKind

from framebus import tracing
from framebus.schemas import limits, sources
from framebus.schemas.codec import KafkaRecord, decode, decode_event, event_data, written_by
from framebus.schemas.errors import CodecError
from framebus.schemas.events import CancelRequested, GenerationRequest, TenantUpdated
from framebus.schemas.state import ErrorCode, Tier
from framebus.schemas.topics import REQUEST_TIERS, request_topic
from framebus.schemas.workers import JobDispatched, WorkerAnnounced, WorkReturned
from framebus.services.common import metrics
from framebus.services.common.deadletters import dead_letter
from framebus.services.common.processor import Outputs
from framebus.services.scheduler import records
from framebus.services.scheduler.authenticate import Authenticator
from framebus.services.scheduler.backlog import BacklogEntry
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.core import SchedulerCore, SchedulerOutput
from framebus.services.scheduler.finished import FinishedIndex

log = logging.getLogger(__name__)
REJECTED_TOPIC = "framebus.requests.rejected"


class SchedulerHandlers:
    """The scheduler's state (core, tenants, finished requests) and a handler per input."""

    def __init__(self, config: SchedulerConfig, *, topic_prefix: str = "", admission_context: dict | None = None,
                 authenticator: Authenticator | None = None) -> None:
        self.tenants: dict[str, TenantUpdated] = {}
        # Who may publish what on the Kafka path (signed requests and cancels); followed from framebus.signing.keys.
        self.auth = authenticator or Authenticator()
        self.finished = FinishedIndex(config.dedupe_window_s)
        self.core = SchedulerCore(config, tenants=self.tenants.get, is_finished=self.finished.contains)
        self.prefix = topic_prefix
        self.control_topic = f"{topic_prefix}framebus.control"
        # The deployment's webhook allowlists (Settings.request_context), applied as requests are decoded.
        self.admission_context = admission_context or {}
        self.restored = False  # after restore, our own ledger entries were folded when made
        self.rejected = 0
        # Each live request's trace (its admission span), carried on its job and its result. Not
        # kept in the backlog: after a scheduler restart a request's later spans start a new trace.
        self.traces: dict[tuple[str, str], str] = {}

    # --- inputs ----------------------------------------------------------------------------------
    def on_input(self, record, now: float) -> Outputs:
        """A request or (on the interactive lane) a cancel."""
        if record.topic == self.control_topic:
            return self.on_control(record, now)
        return self.on_request(record, now)

    def on_request(self, record, now: float) -> Outputs:
        headers = list(record.headers)
        try:
            read = decode_event(headers, record.value, context=self.admission_context)
            decoded = read.event
            if not isinstance(decoded, GenerationRequest):
                raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                                 f"request topics carry framebus.generation.requested, not {decoded.event_type}")
            topic_tier = self._tier_of(record.topic)
            if topic_tier is not None and decoded.tier is not topic_tier:
                raise CodecError(ErrorCode.INVALID_REQUEST,
                                 f"`tier` is {decoded.tier.value} but the record is on the {topic_tier.value} topic")
        except CodecError as exc:
            named = named_request(event_data(headers, record.value))
            vouched = named is not None and self.auth.vouches(headers, record.value, named[0])
            return self.refuse(record, str(exc.reason), exc.detail, name_request=vouched)
        refusal = self.auth.check(headers, record.value, tenant_id=decoded.tenant_id, event_id=read.envelope.id,
                                  signed_at=read.envelope.time, now=now)
        if refusal is not None:
            # Nothing in the named tenant's name (no status, no charge): the record may be a forgery
            # of a request that tenant really made.
            return self.unauthenticated(record, decoded.tier.value, refusal)
        if record.key != decoded.tenant_id.encode():
            # Partitioning and per-tenant order rest on the key. The body's tenant is not trusted
            # here, so no `failed` result is written in its name: the producer reads the rejection.
            shown = "no key" if record.key is None else f"key {record.key[:80]!r}"
            self.rejected += 1
            return Outputs().add(REJECTED_TOPIC, dead_letter(
                record, ErrorCode.INVALID_REQUEST.value,
                f"the record key must be the tenant id {decoded.tenant_id!r}, but the record has {shown}"))
        key = (decoded.tenant_id, decoded.request_id)
        with tracing.span("admit", parent=read.envelope.traceparent, kind=SpanKind.CONSUMER, attributes={
                "framebus.tenant": decoded.tenant_id, "framebus.request_id": decoded.request_id,
                "framebus.tier": decoded.tier.value}) as admitted:
            out = self.core.submit(decoded, now)
            decision = ("queued" if out.queued else "duplicate" if out.duplicates else
                        str(out.terminal[0].code) if out.terminal else "none")
            admitted.set_attribute("framebus.decision", decision)
            metrics.admissions.add(1, {"tier": decoded.tier.value, "decision": decision})
            if out.queued:
                admitted.set_attribute("framebus.queue_depth", self.core.queue.depth(decoded.tier))
                # Carried on when recorded, or when the producer started the trace (sampled or not);
                # a trace begun here and not sampled is dropped: nothing after it would record.
                traceparent = (tracing.traceparent_of(admitted, read.envelope.traceparent)
                               if admitted.is_recording() else read.envelope.traceparent)
                if traceparent:
                    self.traces[key] = traceparent
            elif out.terminal:
                self.traces.pop(key, None)
        refused = Outputs()
        if any(t.code is ErrorCode.UNKNOWN_TENANT for t in out.terminal):  # a bad record, not just a refusal
            refused.add(REJECTED_TOPIC, dead_letter(record, ErrorCode.UNKNOWN_TENANT.value, out.terminal[0].message))
        for duplicate in [d for d in out.duplicates if self._reused_with_another_body(d)]:
            # The original is untouched; the producer learns why its record did nothing.
            out.duplicates.remove(duplicate)
            self.rejected += 1
            refused.add(REJECTED_TOPIC, dead_letter(
                record, ErrorCode.DUPLICATE_REQUEST.value,
                f"request_id {duplicate.request_id!r} was already used with a different body"))
        return refused.extend(self.publish(out))

    def _reused_with_another_body(self, request: GenerationRequest) -> bool:
        known = (self.core.live_digest(request.tenant_id, request.request_id)
                 or self.finished.digest(request.tenant_id, request.request_id))
        return known is not None and known != request.digest()

    def on_control(self, record, now: float) -> Outputs:
        try:
            read = decode_event(list(record.headers), record.value)
        except CodecError as exc:
            log.warning("skipped an unreadable control record: %s", exc)
            return Outputs()
        decoded = read.event
        if isinstance(decoded, CancelRequested | WorkReturned):
            # Only a worker hands work back: that takes the services' signature, a cancel its tenant's.
            refusal = self.auth.check(list(record.headers), record.value, tenant_id=decoded.tenant_id,
                                      event_id=read.envelope.id, signed_at=read.envelope.time, now=now,
                                      services_only=isinstance(decoded, WorkReturned))
            if refusal is not None:
                return self.unauthenticated(record, "control", refusal)
        if isinstance(decoded, CancelRequested):
            return self.publish(self.core.cancel(decoded, now))
        if isinstance(decoded, WorkReturned):
            return self.publish(self.core.returned(decoded, now))
        return Outputs()

    def on_result(self, record, now: float) -> Outputs:  # noqa: ARG002 - the runtime's handler signature
        # Only the ids matter here, and results come from our own pipeline: read the
        # envelope, skip full model validation (metering validates and dead-letters what it bills).
        try:
            data = decode(list(record.headers), record.value).data
            tenant_id, request_id = data["tenant_id"], data["request_id"]
        except (CodecError, KeyError, TypeError) as exc:
            log.warning("skipped an unreadable result: %s", exc)
            return Outputs()
        self.core.request_finished(tenant_id, request_id)
        self.traces.pop((tenant_id, request_id), None)
        return Outputs().add(*records.tombstone(tenant_id, request_id))

    def step(self, now: float, heard_at: float | None = None, results_read_at: float | None = None) -> Outputs:
        return self.publish(self.core.step(now, heard_at, results_read_at))

    # --- errors ----------------------------------------------------------------------------------
    def refuse_after_bug(self, exc: Exception, record, now: float) -> Outputs:  # noqa: ARG002
        """The lane's error policy: a bug met by one request refuses it (internal_error) and it ends failed."""
        return self.refuse(record, ErrorCode.INTERNAL_ERROR.value, f"the scheduler failed on this request: {exc!r}")

    @staticmethod
    def skip_result_after_bug(exc: Exception, record, now: float) -> Outputs:  # noqa: ARG004
        """Results are metering's to dead-letter; the scheduler only loses a tombstone it rewrites on restart."""
        log.error("skipped the result at %s/%s/%s: %r", record.topic, record.partition, record.offset, exc)
        return Outputs()

    def unauthenticated(self, record, lane: str, refusal: str) -> Outputs:
        self.rejected += 1
        metrics.admissions.add(1, {"tier": lane, "decision": ErrorCode.UNAUTHENTICATED.value})
        log.warning("refused a record at %s/%s/%s: %s", record.topic, record.partition, record.offset, refusal)
        return Outputs().add(REJECTED_TOPIC, dead_letter(record, ErrorCode.UNAUTHENTICATED.value, refusal))

    def refuse(self, record, reason: str, detail: str, *, name_request: bool = True) -> Outputs:
        """The record to the rejected topic, and a failed result for whatever request it still names
        (unless ``name_request`` is false: a record that may not speak for that request's tenant)."""
        self.rejected += 1
        out = Outputs().add(REJECTED_TOPIC, dead_letter(record, reason, detail))
        known = named_request(event_data(record.headers, record.value)) if name_request else None  # structured: `data`
        if known is not None:
            tier = self._tier_of(record.topic) or Tier.STANDARD
            out.extend(records.failed_for_unreadable(*known, tier, reason, detail))
        return out

    # --- outputs ---------------------------------------------------------------------------------
    def publish(self, out: SchedulerOutput) -> Outputs:
        if not out:
            return Outputs()
        for job in out.jobs:
            dispatched_at = job.dispatched_at.timestamp()
            for entry in out.job_entries[job.job_id]:
                metrics.queue_wait.record(max(0.0, dispatched_at - entry.enqueued_at), {"tier": entry.tier.value})
        if out.jobs and self.traces:
            out.jobs = [self._traced(job, out.job_entries[job.job_id]) for job in out.jobs]
        published = Outputs(records.for_output(out, lambda tenant, request: self.traces.get((tenant, request))))
        for ended in out.terminal:
            self.traces.pop((ended.request.tenant_id, ended.request.request_id), None)
        for duplicate in out.duplicates:  # re-publish its state, so whoever resubmitted sees it
            known = self.finished.record(duplicate.tenant_id, duplicate.request_id)
            if known is not None:
                published.add("framebus.status", known)
            else:
                published.add(*records.status(duplicate, self.core.state_of(duplicate)))
        return published

    def _traced(self, job: JobDispatched, entries) -> JobDispatched:
        """The job with each request's trace continued: its queue wait and its dispatch as spans."""
        dispatched_at = job.dispatched_at.timestamp()
        traceparents = {}
        for entry in entries:
            parent = self.traces.get(entry.key)
            if parent is None or tracing.unsampled(parent):
                if parent is not None:
                    traceparents[entry.request.request_id] = parent  # carried on, nothing recorded
                continue
            attributes = {"framebus.request_id": entry.request.request_id, "framebus.tier": entry.tier.value,
                          "framebus.attempt": entry.attempt}
            tracing.record("queue wait", parent=parent, start=entry.enqueued_at, end=dispatched_at,
                           attributes=attributes)
            traceparents[entry.request.request_id] = tracing.record(
                "dispatch", parent=parent, start=dispatched_at, end=dispatched_at, kind=SpanKind.PRODUCER,
                attributes={**attributes, "framebus.worker": job.worker_id, "framebus.job": job.job_id,
                            "framebus.batch_size": len(job.requests), "framebus.shape": job.shape.label()}) or parent
        return job.model_copy(update={"traceparents": traceparents}) if traceparents else job

    def observed(self) -> list[Callable[[], None]]:
        """Register what /metrics reads from the live scheduler (queue depth per tier, requests in
        flight, workers); returns how to unregister it."""
        return [
            metrics.observe("framebus.queue.depth", lambda: [(float(self.core.queue.depth(tier)), {"tier": tier.value})
                                                             for tier in Tier]),
            metrics.observe("framebus.queue.oldest_wait", lambda: [
                (self.core.queue.oldest_wait(tier, time.time()), {"tier": tier.value}) for tier in Tier]),
            metrics.observe("framebus.requests.in_flight", lambda: [(float(self.core.in_flight()), {})]),
            metrics.observe("framebus.workers.live", lambda: [(float(len(self.core.workers)), {})]),
        ]

    # --- followed tables -------------------------------------------------------------------------
    def apply_signing_keys(self, record) -> None:
        self.auth.apply_keys(record)

    def apply_tenant(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, TenantUpdated):
            self.tenants[event.tenant_id] = event

    def apply_ledger(self, record) -> None:
        if self.restored and written_by(record.headers, sources.SCHEDULER):
            return  # our own reservation or release, folded when it was made; skip decoding it again
        self.core.ledger(decode_event(record.headers, record.value).event)  # type: ignore[arg-type]

    def apply_worker(self, record, now: float) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, WorkerAnnounced):
            self.core.worker_announced(event, now)

    def restore(self, backlog: list[KafkaRecord], now: float) -> tuple[int, int]:
        """Rebuild the queue and what is in flight from the backlog; returns (requests, jobs)."""
        entries = [BacklogEntry.decode(record.value) for record in backlog if record.value]
        jobs = jobs_of(entries)
        self.core.restore([e.queued() for e in entries], jobs, now)
        self.restored = True
        return len(entries), len(jobs)

    def _tier_of(self, topic: str) -> Tier | None:
        name = topic.removeprefix(self.prefix)
        return next((Tier(t) for t in REQUEST_TIERS if name == request_topic(t)), None)


def jobs_of(entries: list[BacklogEntry]) -> list[JobDispatched]:
    grouped: dict[str, list[BacklogEntry]] = {}
    for entry in entries:
        if entry.job_id is not None:
            grouped.setdefault(entry.job_id, []).append(entry)
    return [JobDispatched(job_id=job_id, worker_id=members[0].worker_id, seq=members[0].job_seq or 0,
                          shape=members[0].shape, requests=tuple(m.request for m in members),
                          attempt=max(m.attempt for m in members))
            for job_id, members in grouped.items()]


def named_request(value: bytes | None) -> tuple[str, str] | None:
    """Tenant and request id an unreadable record still names, if both are valid ids: such a
    request gets a `failed` result, so its producer learns why (the worker uses this too)."""
    try:
        data = json.loads(value or b"")
        tenant, request = data["tenant_id"], data["request_id"]
    except (ValueError, TypeError, KeyError):
        return None
    if (isinstance(tenant, str) and isinstance(request, str) and re.match(limits.TENANT_ID_PATTERN, tenant)
            and re.match(limits.REQUEST_ID_PATTERN, request)):
        return tenant, request
    return None

