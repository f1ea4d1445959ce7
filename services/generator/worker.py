"""The worker loop: announce capacity, take jobs from its partition of framebus.jobs,
render, encode, store, and report each request's outcome.

Protocol (see schemas.workers): the worker reads its own partition of framebus.jobs
from the end, announces itself only once its engine is warm, re-announces whenever
its capacity changes and every ``heartbeat_interval_s``, and reports every request of
every job with exactly one result (completed, failed or cancelled) and its status. A
job for another worker id is ignored; a job record it cannot read goes to
framebus.jobs.dead with the reason.

Two stages, so the engine is idle only when there is no work: the render thread (the
caller of ``run``) denoises job N+1 while the output thread encodes, uploads and
reports job N. The hand-off holds at most one rendered job, so memory stays flat.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.errors import CodecError
from framebus.schemas.events import (
    ADMITTED,
    CancelRequested,
    ErrorInfo,
    Event,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    GenerationRequest,
    Output,
    StatusChanged,
    Timings,
    Usage,
)
from framebus.schemas.state import ErrorCode, RequestState, Tier
from framebus.schemas.workers import JobDispatched, WorkerAnnounced
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common.compacted import partition_for
from framebus.services.common.settings import Settings
from framebus.services.generator.encode import EncodeConfig, EncodeError, encode_video
from framebus.services.generator.engine import Engine, Rendered
from framebus.services.generator.storage import UploadFailed, VideoStore, result_fingerprint, utc_now

log = logging.getLogger(__name__)
SOURCE = "/framebus/worker"
DEAD_JOBS_TOPIC = "framebus.jobs.dead"


class EngineOutOfMemory(Exception):
    """Raised by an engine when a batch does not fit; the worker splits the batch and retries."""


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    max_batch_size: int = 8
    slots: int = 3  # one denoising, one encoding/uploading, one waiting: the engine never waits for the scheduler
    heartbeat_interval_s: float = 2.0
    machine: str = "cpu"  # machine kind for the cost model


@dataclass(frozen=True)
class Served:
    """Served from the result cache: a copy of an identical earlier video, no engine work."""

    request: GenerationRequest
    output: Output


@dataclass(frozen=True)
class Refused:
    request: GenerationRequest
    code: ErrorCode
    message: str


@dataclass
class RenderedJob:
    job: JobDispatched
    items: list[Rendered | Served | Refused]
    started: object  # datetime the job started
    duplicates: set[str] = field(default_factory=set)  # request ids whose frames are another request's


@dataclass
class Utilisation:
    """Wall time and time in the engine, since the first job arrived (for the bench)."""

    engine_s: float = 0.0
    first_job_at: float | None = None
    idle_since: float | None = None

    def share(self, now: float | None = None) -> float:
        if self.first_job_at is None:
            return 0.0
        end = self.idle_since or (now or time.monotonic())
        return self.engine_s / max(end - self.first_job_at, 1e-9)


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"[:64]


class Worker:
    def __init__(self, *, settings: Settings, engine: Engine, store: VideoStore, config: WorkerConfig,
                 spool_dir: Path, encode: EncodeConfig = EncodeConfig()) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.config = config
        self.spool_dir = spool_dir
        self.encode_config = encode
        self._producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=2)
        self._jobs: deque[JobDispatched] = deque()
        self._running: set[str] = set()
        self._cancelled: set[tuple[str, str]] = set()
        self._last_seq = -1
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._outbox: queue.Queue[RenderedJob | None] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self.completed = 0
        self.utilisation = Utilisation()
        self.ready = threading.Event()  # set once warm, reading its partition and announced

    # --- announcements ---------------------------------------------------------------------
    def announcement(self, *, stopping: bool = False) -> WorkerAnnounced:
        with self._lock:
            running = tuple(self._running | {job.job_id for job in self._jobs})
            return WorkerAnnounced(worker_id=self.config.worker_id, model=self.engine.model, warm=True,
                                   max_batch_size=self.config.max_batch_size, slots=self.config.slots,
                                   running_job_ids=running, last_job_seq=self._last_seq,
                                   heartbeat_interval_s=self.config.heartbeat_interval_s,
                                   engine=self.engine.name, stopping=stopping)

    def announce(self, *, stopping: bool = False) -> None:
        self._send("framebus.workers", self.announcement(stopping=stopping))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval_s):
            self.announce()

    # --- the loop ------------------------------------------------------------------------------
    def run(self, *, max_seconds: float | None = None) -> None:
        """Serve until ``stop()`` (or ``max_seconds``); finishes the jobs in hand before leaving."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.spool_dir.glob("*.*"):  # left by a crash; the scheduler re-dispatched those requests
            stale.unlink(missing_ok=True)
        self.engine.warm()
        consumer = self._jobs_consumer()
        self.announce()
        self.ready.set()
        reader = threading.Thread(target=self._read, args=(consumer,), name="jobs-reader", daemon=True)
        output = threading.Thread(target=self._output_stage, name="output", daemon=True)
        for thread in (threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True), reader, output):
            thread.start()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with self._work:
                    if not self._jobs:
                        if self.utilisation.idle_since is None:
                            self.utilisation.idle_since = time.monotonic()
                        self._work.wait(timeout=0.1)
                        continue
                    job = self._jobs.popleft()
                    self._running.add(job.job_id)
                self._outbox.put(self._render_job(job))
        finally:
            self._stop.set()
            self._outbox.put(None)
            output.join()
            reader.join(timeout=5)
            self.announce(stopping=True)
            self._producer.flush(timeout=10)
            consumer.close()

    def stop(self) -> None:
        self._stop.set()

    def _read(self, consumer: KafkaConsumer) -> None:
        """Receive jobs and cancels while the render thread works."""
        while not self._stop.is_set():
            self._take(consumer.poll(timeout_ms=100))

    def _jobs_consumer(self) -> KafkaConsumer:
        topic = self.settings.topic("framebus.jobs")
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False)
        partitions = consumer.partitions_for_topic(topic) or {0}
        tp = TopicPartition(topic, partition_for(self.config.worker_id.encode(), len(partitions)))
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        consumer.position(tp)  # resolve the end now, before announcing: no job can slip past
        return consumer

    def _take(self, batches) -> None:
        changed = False
        for records in batches.values():
            for record in records:
                if record.key != self.config.worker_id.encode():
                    continue
                try:
                    event = decode_event(record.headers, record.value, context=ADMITTED).event
                except CodecError as exc:
                    self._dead_letter(record, str(exc.reason), exc.detail)
                    continue
                with self._work:
                    if isinstance(event, JobDispatched) and event.worker_id == self.config.worker_id:
                        self._jobs.append(event)
                        self._last_seq = max(self._last_seq, event.seq)
                        if self.utilisation.first_job_at is None:
                            self.utilisation.first_job_at = time.monotonic()
                        self.utilisation.idle_since = None
                        self._work.notify()
                        changed = True
                    elif isinstance(event, CancelRequested):
                        self._cancelled.add((event.tenant_id, event.request_id))
        if changed:
            self.announce()

    def _dead_letter(self, record, reason: str, detail: str) -> None:
        """Park an unreadable job record with its reason; fail the requests we can still name."""
        log.warning("unreadable jobs record at offset %s: %s", record.offset, detail)
        headers = [*(record.headers or []), ("framebus-dead-reason", reason.encode()),
                   ("framebus-dead-detail", detail[:2000].encode()),
                   ("framebus-dead-worker", self.config.worker_id.encode()),
                   ("framebus-dead-source", f"{record.topic}/{record.partition}/{record.offset}".encode())]
        self._producer.send(self.settings.topic(DEAD_JOBS_TOPIC), key=record.key, value=record.value or b"",
                            headers=headers)
        error = ErrorInfo(code=ErrorCode.INVALID_REQUEST, message=f"unreadable job record: {detail}"[:2000])
        for tenant_id, request_id, tier in _named_requests(record.value):
            timings = Timings(finished_at=utc_now())
            try:
                failed = GenerationFailed(request_id=request_id, tenant_id=tenant_id, tier=tier, error=error,
                                          timings=timings)
            except ValidationError:  # ids too broken to report on; the dead letter keeps the record
                continue
            self._send("framebus.results", failed)
            self._send("framebus.status", StatusChanged(request_id=request_id, tenant_id=tenant_id, tier=tier,
                                                        state=RequestState.FAILED, error=error, timings=timings))

    # --- render stage ----------------------------------------------------------------------
    def _is_cancelled(self, request: GenerationRequest) -> bool:
        return (request.tenant_id, request.request_id) in self._cancelled

    def _render_job(self, job: JobDispatched) -> RenderedJob:
        started = utc_now()
        for request in job.requests:
            self._status(request, RequestState.RUNNING, _timings(request, started))
        done = RenderedJob(job, [], started)
        engine_id = self.engine.engine_id
        groups: dict[str, list[GenerationRequest]] = {}  # fingerprint -> identical requests, first one renders
        for request in job.requests:
            if self._is_cancelled(request):
                done.items.append(Rendered(request))
                continue
            if not engine_id:
                groups[request.request_id] = [request]
                continue
            fingerprint = result_fingerprint(request, engine_id)
            if fingerprint in groups:
                groups[fingerprint].append(request)
                done.duplicates.add(request.request_id)
            elif (output := self.store.cached(request, fingerprint, utc_now())) is not None:
                done.items.append(Served(request, output))
            else:
                groups[fingerprint] = [request]
        if groups:
            leaders = [members[0] for members in groups.values()]
            # A shared row is cancelled only when every request that shares it is.
            members_of = {members[0].request_id: members for members in groups.values()}
            rendered = self._render(leaders, lambda r: all(self._is_cancelled(m) for m in members_of[r.request_id]))
            for item in rendered:
                members = members_of[item.request.request_id]
                for member in members:
                    if isinstance(item, Refused):
                        done.items.append(replace(item, request=member))
                    elif self._is_cancelled(member):
                        done.items.append(Rendered(member))
                    elif member is members[0]:
                        done.items.append(item)
                    else:
                        done.items.append(replace(item, request=member, gpu_seconds=0.0, steps_run=0,
                                                  steps_skipped_by_cache=0))
        return done

    def _render(self, requests: Sequence[GenerationRequest], cancelled) -> list[Rendered | Refused]:
        """Render, splitting the batch in halves while it does not fit in memory."""
        began = time.monotonic()
        try:
            return self.engine.render(requests, cancelled)
        except EngineOutOfMemory as exc:
            if len(requests) == 1:
                return [Refused(requests[0], ErrorCode.OUT_OF_MEMORY, f"out of memory even alone: {exc}")]
            half = len(requests) // 2
            log.warning("batch of %d is out of memory; retrying as %d + %d", len(requests), half,
                        len(requests) - half)
            return self._render(requests[:half], cancelled) + self._render(requests[half:], cancelled)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the worker
            log.exception("engine failed on %d requests", len(requests))
            return [Refused(r, ErrorCode.GENERATION_ERROR, f"{type(exc).__name__}: {exc}") for r in requests]
        finally:
            self.utilisation.engine_s += time.monotonic() - began

    # --- output stage ----------------------------------------------------------------------
    def _output_stage(self) -> None:
        while (done := self._outbox.get()) is not None:
            try:
                for item in done.items:
                    self._deliver(done, item)
            finally:
                with self._lock:
                    self._running.discard(done.job.job_id)
                    for request in done.job.requests:  # the set only holds cancels still useful
                        self._cancelled.discard((request.tenant_id, request.request_id))
                self.announce()

    def _deliver(self, done: RenderedJob, item: Rendered | Served | Refused) -> None:
        request = item.request
        try:
            if isinstance(item, Refused):
                self._fail(request, item.code, item.message, done.started)
            elif isinstance(item, Served):
                self._complete(request, item.output, self._usage(request, result_cache_hit=True),
                               _timings(request, done.started))
            elif item.cancelled or self._is_cancelled(request):  # a cancel may land while it waits for upload
                usage = self._usage(request, gpu_seconds=item.gpu_seconds, steps_run=item.steps_run,
                                    steps_skipped_by_cache=item.steps_skipped_by_cache)
                timings = _timings(request, done.started, finished_at=utc_now())
                self._send("framebus.results", GenerationCancelled(**_common(request, timings),
                                                                   reason="cancelled while running", usage=usage))
                self._status(request, RequestState.CANCELLED, timings)
            else:
                self._store(done, item)
        except Exception as exc:  # noqa: BLE001 - every request ends in exactly one terminal state
            log.exception("could not report request %s", request.request_id)
            self._fail(request, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", done.started)

    def _store(self, done: RenderedJob, item: Rendered) -> None:
        request = item.request
        fingerprint = result_fingerprint(request, self.engine.engine_id) if self.engine.engine_id else None
        if request.request_id in done.duplicates and fingerprint is not None:
            output = self.store.cached(request, fingerprint, utc_now())
            if output is not None:  # its twin earlier in the batch was stored: a copy, no encode
                self._complete(request, output, self._usage(request, result_cache_hit=True),
                               _timings(request, done.started))
                return
        video = item.video
        if video is None:
            try:
                video = encode_video(item.frames, request.fps, self.spool_dir / f"{uuid.uuid4().hex}.mp4",
                                     self.encode_config)
            except EncodeError as exc:
                self._fail(request, ErrorCode.ENCODE_FAILED, str(exc), done.started, item.gpu_seconds)
                return
        uploading = time.perf_counter()
        try:
            output = self.store.put(request, video, utc_now(), fingerprint=fingerprint, shared=item.shared)
        except UploadFailed as exc:
            self._fail(request, ErrorCode.UPLOAD_FAILED, str(exc), done.started, item.gpu_seconds)
            return
        finally:
            if not item.shared:
                video.remove()  # out of the spool: uploaded, or the request failed and says so
        usage = self._usage(request, gpu_seconds=item.gpu_seconds, steps_run=item.steps_run,
                            steps_skipped_by_cache=item.steps_skipped_by_cache)
        timings = _timings(request, done.started, denoise_s=item.denoise_s, decode_s=item.decode_s,
                           encode_s=None if item.shared else video.encode_s,
                           upload_s=time.perf_counter() - uploading)
        self._complete(request, output, usage, timings)

    def _usage(self, request: GenerationRequest, **fields) -> Usage:
        return Usage(tokens=request.quote(), machine=self.config.machine, **fields)

    def _complete(self, request: GenerationRequest, output: Output, usage: Usage, timings: Timings) -> None:
        timings = timings.model_copy(update={"finished_at": utc_now()})
        self._send("framebus.results", GenerationCompleted(**_common(request, timings), output=output, usage=usage,
                                                           seed=request.seed or 0))
        self._status(request, RequestState.COMPLETED, timings, output=output, tokens=usage.tokens)
        self.completed += 1

    def _fail(self, request: GenerationRequest, code: ErrorCode, message: str, started,
              gpu_seconds: float = 0.0) -> None:
        timings = _timings(request, started, finished_at=utc_now())
        error = ErrorInfo(code=code, message=message[:2000])
        usage = self._usage(request, gpu_seconds=gpu_seconds)  # the tokens metering releases
        self._send("framebus.results", GenerationFailed(**_common(request, timings), error=error, usage=usage))
        self._status(request, RequestState.FAILED, timings, error=error)

    def _status(self, request: GenerationRequest, state: RequestState, timings: Timings, **extra) -> None:
        self._send("framebus.status", StatusChanged(request_id=request.request_id, tenant_id=request.tenant_id,
                                                    state=state, tier=request.tier, batch_id=request.batch_id,
                                                    timings=timings, **extra))

    def _send(self, topic: str, event: Event) -> None:
        record = encode_event(event, source=SOURCE)
        self._producer.send(self.settings.topic(topic), key=record.key, value=record.value, headers=record.headers)


def _timings(request: GenerationRequest, started, **stages) -> Timings:
    """Stage timings of one request; queued is submission to the worker starting its job."""
    queued = max(0.0, (started - request.submitted_at).total_seconds())
    return Timings(started_at=started, queued_s=queued, **stages)


def _common(request: GenerationRequest, timings: Timings) -> dict:
    return {"request_id": request.request_id, "tenant_id": request.tenant_id, "tier": request.tier,
            "model": request.model, "batch_id": request.batch_id, "custom_id": request.custom_id,
            "metadata": request.metadata, "timings": timings, "webhook_url": request.webhook_url}


def _named_requests(value: bytes | None) -> list[tuple[str, str, Tier]]:
    """(tenant, request id, tier) of each request an unreadable job still names, best effort."""
    try:
        data = json.loads(value or b"")
        named = []
        for entry in data.get("requests", []):
            tier = entry.get("tier") if entry.get("tier") in {t.value for t in Tier} else Tier.STANDARD
            if isinstance(entry.get("tenant_id"), str) and isinstance(entry.get("request_id"), str):
                named.append((entry["tenant_id"], entry["request_id"], Tier(tier)))
        return named
    except (ValueError, AttributeError, TypeError):
        return []
