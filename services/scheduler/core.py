"""The scheduler core: no I/O; one step reads as expire, recover, dispatch.

Inputs arrive as method calls with the clock value (``submit``, ``cancel``,
``worker_announced``, ``request_finished``, ``ledger``); each returns or accumulates
named outputs (``SchedulerOutput``) that the faust edge publishes. Tests drive it by
hand, feeding announcements and results back, as vLLM's scheduler tests do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from framebus.schemas.events import CancelRequested, GenerationRequest, LedgerReleased, LedgerReserved, TenantUpdated
from framebus.schemas.state import ErrorCode, RequestState
from framebus.schemas.workers import JobDispatched, WorkerAnnounced, WorkReturned
from framebus.services.common.ledger import Balances, LedgerEntry, release_id, reserve_id
from framebus.services.scheduler.admission import Admit, DedupeIndex, Duplicate, Refuse, decide
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.queue import QueuedRequest, RequestQueue
from framebus.services.scheduler.workers import WorkerRegistry


@dataclass(frozen=True)
class Terminal:
    """A request the scheduler ended itself: refused, expired or cancelled before running."""

    request: GenerationRequest
    state: RequestState  # FAILED or CANCELLED
    code: ErrorCode | None
    message: str


@dataclass(frozen=True)
class ForwardedCancel:
    worker_id: str
    job_id: str
    cancel: CancelRequested


@dataclass
class SchedulerOutput:
    queued: list[QueuedRequest] = field(default_factory=list)  # status `queued`; backlog written
    requeued: list[QueuedRequest] = field(default_factory=list)  # back in the queue after a worker was lost
    jobs: list[JobDispatched] = field(default_factory=list)  # to framebus.jobs; status `dispatched`
    job_entries: dict[str, list[QueuedRequest]] = field(default_factory=dict)  # job id -> its queue entries
    terminal: list[Terminal] = field(default_factory=list)  # results + status
    ledger: list[LedgerEntry] = field(default_factory=list)  # reservations made and released
    duplicates: list[GenerationRequest] = field(default_factory=list)  # re-publish their status
    cancels: list[ForwardedCancel] = field(default_factory=list)  # to the worker holding the request
    waiting: dict[tuple[str, str], str] = field(default_factory=dict)  # why a queued request cannot run yet

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


def reservation(request: GenerationRequest, tokens: float) -> LedgerReserved:
    return LedgerReserved(tenant_id=request.tenant_id, entry_id=reserve_id(request.tenant_id, request.request_id),
                          request_id=request.request_id, tokens=tokens)


def release(request: GenerationRequest, tokens: float, reason: str, outcome: str | None = None) -> LedgerReleased:
    # The same entry id metering uses for a release, so the ledger fold settles it once.
    return LedgerReleased(tenant_id=request.tenant_id, entry_id=release_id(request.tenant_id, request.request_id),
                          request_id=request.request_id, tokens=tokens, reason=reason, tier=request.tier,
                          model=request.model, outcome=outcome)


class SchedulerCore:
    def __init__(self, config: SchedulerConfig, *, tenants: Callable[[str], TenantUpdated | None],
                 balances: Balances | None = None,
                 is_finished: Callable[[str, str], bool] = lambda tenant, request: False) -> None:
        """``is_finished`` answers from framebus.status whether a request already ended (dedupe across restarts)."""
        self.config = config
        self.tenants = tenants
        self.is_finished = is_finished
        self.balances = balances or Balances()
        self.queue = RequestQueue(config)
        self.workers = WorkerRegistry(config.worker_timeout_s, config.reconnect_grace_s)
        self.dedupe = DedupeIndex(config.dedupe_window_s)
        self._in_flight: dict[tuple[str, str], tuple[str, QueuedRequest]] = {}  # request -> (job id, entry)
        self._unfinished: dict[str, int] = {}  # job id -> its requests still in flight
        self._dedupe_swept_at = 0.0
        self._unserved_checked_at = 0.0
        self._unreported_since: dict[str, float] = {}  # job id -> when no worker held it any more
        # Jobs of lost workers, with when they were lost: re-queued once every result sent before
        # then has been read (their requests may have finished just before the worker went).
        self._lost_jobs: list[tuple[float, JobDispatched]] = []
        self._cancelled_in_flight: dict[tuple[str, str], CancelRequested] = {}

    # --- inputs ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        key = (request.tenant_id, request.request_id)
        if key in self._in_flight or self.queue.get(*key) is not None or self.is_finished(*key):
            out.duplicates.append(request)
            return out
        decision = decide(request, tenant=self.tenants(request.tenant_id), balances=self.balances,
                          dedupe=self.dedupe, queued_in_tier=self.queue.depth(request.tier), config=self.config,
                          now=now)
        if isinstance(decision, Duplicate):
            out.duplicates.append(request)
            return out
        self.dedupe.remember(request.tenant_id, request.request_id, now)
        if isinstance(decision, Refuse):
            out.terminal.append(Terminal(request, RequestState.FAILED, decision.code, decision.message))
            return out
        assert isinstance(decision, Admit)
        held = reservation(request, decision.tokens)
        self.balances.apply(held)
        out.ledger.append(held)
        entry = self.queue.push(request, decision.tokens, now)
        out.queued.append(entry)
        reason = self._unserved_reason(entry)
        if reason is not None:
            out.waiting[entry.key] = reason
        return out

    def _unserved_reason(self, entry: QueuedRequest) -> str | None:
        """Why no worker can take ``entry`` (None: one can, or no worker has been heard yet)."""
        if self.workers.first_heard_at is None or self.workers.accepts_any(entry.shape):
            return None
        served = ", ".join(self.workers.served_models()) or "none"
        return (f"no worker serves model {entry.request.model} at this size (models served: {served}); "
                f"it fails with model_unavailable after {self.config.unserved_grace_s:g}s")

    def cancel(self, event: CancelRequested, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        queued = self.queue.remove(event.tenant_id, event.request_id)
        if queued is not None:
            self._end(out, queued, RequestState.CANCELLED, None, event.reason)
            return out
        flying = self._in_flight.get((event.tenant_id, event.request_id))
        if flying is not None:
            job_id, _ = flying
            worker = self.workers.holder_of(job_id)
            if worker is not None:
                out.cancels.append(ForwardedCancel(worker.worker_id, job_id, event))
            # Should its worker be lost before it answers, the request ends cancelled, not re-queued.
            self._cancelled_in_flight[(event.tenant_id, event.request_id)] = event
        return out

    def returned(self, event: WorkReturned, now: float) -> SchedulerOutput:
        """A stopping worker handed a request back unfinished: queue it again at once, in its place
        (unless it has finished meanwhile, or already moved to another job)."""
        out = SchedulerOutput()
        key = (event.tenant_id, event.request_id)
        flying = self._in_flight.get(key)
        if flying is None or flying[0] != event.job_id:
            return out
        del self._in_flight[key]
        if self._left_in(event.job_id) == 0:
            self.workers.finish(event.job_id)
        self._back_in_queue(out, flying[1], now)
        return out

    def worker_announced(self, announcement: WorkerAnnounced, now: float) -> None:
        self.workers.announce(announcement, now)

    def request_finished(self, tenant_id: str, request_id: str) -> None:
        """A result arrived: the request left the pipeline; finished jobs free their slot."""
        self._cancelled_in_flight.pop((tenant_id, request_id), None)
        flying = self._in_flight.pop((tenant_id, request_id), None)
        if flying is not None and self._left_in(flying[0]) == 0:
            self.workers.finish(flying[0])

    def _left_in(self, job_id: str) -> int:
        """Count one request of ``job_id`` as done; return how many are still in flight."""
        left = self._unfinished.get(job_id, 1) - 1
        if left > 0:
            self._unfinished[job_id] = left
        else:
            self._unfinished.pop(job_id, None)
        return left

    def live_digest(self, tenant_id: str, request_id: str) -> str | None:
        """The digest of a request still queued or in flight (what its producer sent), else None."""
        entry = self.queue.get(tenant_id, request_id)
        if entry is None:
            flying = self._in_flight.get((tenant_id, request_id))
            entry = flying[1] if flying is not None else None
        return entry.digest if entry is not None else None

    def in_flight(self) -> int:
        """Requests dispatched to workers and not finished yet."""
        return len(self._in_flight)

    def state_of(self, request: GenerationRequest) -> RequestState:
        """Where a live request is: dispatched if a worker holds it, else queued."""
        key = (request.tenant_id, request.request_id)
        return RequestState.DISPATCHED if key in self._in_flight else RequestState.QUEUED

    def ledger(self, entry: LedgerEntry) -> None:
        self.balances.apply(entry)

    # --- the step -------------------------------------------------------------------------
    def step(self, now: float, heard_at: float | None = None, results_read_at: float | None = None) -> SchedulerOutput:
        """``heard_at``: when the broker last answered the scheduler (None: assume it always does).
        ``results_read_at``: every result on Kafka at that time has been handed to ``request_finished``
        (None: results are always read at once, as in tests that feed them by hand)."""
        out = SchedulerOutput()
        if now - self._dedupe_swept_at > 60.0:  # bound the dedupe index to its window
            self.dedupe.expire(now)
            self._dedupe_swept_at = now
        for entry in self.queue.pop_expired(now):
            self._end(out, entry, RequestState.FAILED, ErrorCode.EXPIRED,
                      f"still queued after the {entry.tier.value} tier's "
                      f"{self.config.policy(entry.tier).ttl_s:g}s time to live")
        for worker in self.workers.lapsed(now, heard_at):
            self._lost_jobs.extend((now, job) for job in worker.jobs.values())
        if self._lost_jobs:
            read_at = now if results_read_at is None else results_read_at
            ready = [job for lost_at, job in self._lost_jobs if lost_at <= read_at]
            self._lost_jobs = [(lost_at, job) for lost_at, job in self._lost_jobs if lost_at > read_at]
            for job in ready:
                self._requeue(out, job, now)
        if now - self._unserved_checked_at >= 1.0:
            self._unserved_checked_at = now
            self._fail_unserved(out, now)
            self._fail_unreported(out, now)
        self._dispatch(out, now)
        return out

    def _fail_unreported(self, out: SchedulerOutput, now: float) -> None:
        """Requests of a job its (live) worker no longer holds, with no result after the grace, fail
        with `worker_lost`: the worker finished the job without reporting them (its job record was
        unreadable and named no request, say), so they are never left in flight forever."""
        waiting = {job.job_id for _, job in self._lost_jobs}  # re-queued once results are read
        for job_id in list(self._unfinished):
            if job_id in waiting or self.workers.holder_of(job_id) is not None:
                self._unreported_since.pop(job_id, None)
                continue
            since = self._unreported_since.setdefault(job_id, now)
            if now - since < self.config.unreported_grace_s:
                continue
            for key, (held_by, entry) in list(self._in_flight.items()):
                if held_by == job_id:
                    del self._in_flight[key]
                    self._end(out, entry, RequestState.FAILED, ErrorCode.WORKER_LOST,
                              f"its worker finished job {job_id} without reporting this request "
                              f"for {self.config.unreported_grace_s:g}s")
            self._unfinished.pop(job_id, None)
            self._unreported_since.pop(job_id, None)

    def _fail_unserved(self, out: SchedulerOutput, now: float) -> None:
        """Requests no live worker can take, for longer than the grace, fail with `model_unavailable`.

        The grace counts from the latest of: the request's arrival, the first worker this scheduler
        heard (after a restart nobody is known yet), and the last time a worker announced its model
        (a worker restarting is not a model gone)."""
        heard = self.workers.first_heard_at
        if heard is None:
            return
        for shape in self.queue.waiting_shapes():
            if self.workers.accepts_any(shape):
                continue
            seen = self.workers.model_seen_at.get(str(shape.model), heard)
            if now - max(heard, seen) < self.config.unserved_grace_s:
                continue  # no request of this shape can have waited out the grace yet
            for entry in self.queue.of_shape(shape):
                if now - max(entry.enqueued_at, heard, seen) >= self.config.unserved_grace_s:
                    self.queue.remove(*entry.key)
                    served = ", ".join(self.workers.served_models()) or "none"
                    self._end(out, entry, RequestState.FAILED, ErrorCode.MODEL_UNAVAILABLE,
                              f"no worker served model {entry.request.model} at this size for "
                              f"{self.config.unserved_grace_s:g}s (models served: {served})")

    def _dispatch(self, out: SchedulerOutput, now: float) -> None:
        for worker in self.workers.with_room():
            for _ in range(worker.free_slots()):
                head = self.queue.best(worker.announcement.accepts)
                limit = worker.announcement.max_batch_size
                if head is None or not self.queue.batch_ready(head, limit, now):
                    break  # hold the worker for the best request rather than give it lesser work
                batch = self.queue.take_batch(head.shape, limit)
                job = self._job(worker.worker_id, batch)
                out.jobs.append(job)
                out.job_entries[job.job_id] = batch

    def _job(self, worker_id: str, batch: list[QueuedRequest]) -> JobDispatched:
        attempt = max(entry.attempt for entry in batch)
        # Requests go as they came (a missing seed is derived by the worker: GenerationRequest.effective_seed),
        # so every status of a request carries the digest of what its producer sent.
        requests = tuple(e.request for e in batch)
        job = JobDispatched(job_id=f"job-{uuid.uuid4().hex[:16]}", worker_id=worker_id,
                            seq=self.workers.next_seq(worker_id), shape=batch[0].shape, requests=requests,
                            attempt=attempt)
        self.workers.record(job)
        for entry in batch:
            self._in_flight[entry.key] = (job.job_id, entry)
        self._unfinished[job.job_id] = len(batch)
        return job

    def _requeue(self, out: SchedulerOutput, job: JobDispatched, now: float) -> None:
        """Queue a lost job's unfinished requests again (a request cancelled meanwhile ends instead)."""
        for request in job.requests:
            key = (request.tenant_id, request.request_id)
            flying = self._in_flight.get(key)
            if flying is None or flying[0] != job.job_id:
                continue  # finished, or already moved to another job
            del self._in_flight[key]
            self._left_in(job.job_id)
            self._back_in_queue(out, flying[1], now)

    def _back_in_queue(self, out: SchedulerOutput, entry: QueuedRequest, now: float) -> None:
        """A request its worker did not finish runs again, unless it was cancelled meanwhile."""
        cancel = self._cancelled_in_flight.pop(entry.key, None)
        if cancel is not None:
            self._end(out, entry, RequestState.CANCELLED, None, cancel.reason)
            return
        out.requeued.append(self.queue.push(entry.request, entry.tokens, now, attempt=entry.attempt + 1,
                                            previous=entry))

    def restore(self, entries: list[QueuedRequest], jobs: list[JobDispatched], now: float) -> None:
        """Rebuild after a restart: queued entries back in the queue, dispatched ones in flight.

        The jobs' workers are unknown until they announce; if they never do, their jobs
        are re-queued once the worker timeout passes, like any lost worker's.
        """
        job_of = {(r.tenant_id, r.request_id): job for job in jobs for r in job.requests}
        for entry in entries:
            self.dedupe.remember(*entry.key, now)
            job = job_of.get(entry.key)
            if job is None:
                self.queue.push(entry.request, entry.tokens, now, attempt=entry.attempt, previous=entry)
            else:
                self._in_flight[entry.key] = (job.job_id, entry)
                self._unfinished[job.job_id] = self._unfinished.get(job.job_id, 0) + 1
        for job in jobs:
            self.workers.adopt(job, now)

    def _end(self, out: SchedulerOutput, entry: QueuedRequest, state: RequestState, code: ErrorCode | None,
             message: str) -> None:
        self._cancelled_in_flight.pop(entry.key, None)
        out.terminal.append(Terminal(entry.request, state, code, message))
        outcome = "expired" if code is ErrorCode.EXPIRED else state.value
        freed = release(entry.request, entry.tokens, state.value if code is None else code.value, outcome)
        self.balances.apply(freed)
        out.ledger.append(freed)
