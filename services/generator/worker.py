"""The worker loop: announce capacity, take jobs from its partition of framebus.jobs,
render, store, and report each request's outcome.

Protocol (see schemas.workers): the worker reads its own partition of framebus.jobs
from the end, announces itself only once its engine is warm, re-announces whenever
its capacity changes and every ``heartbeat_interval_s``, and reports every request of
every job with exactly one result (completed, failed or cancelled) and its status. A
job for another worker id is ignored. Cancels for a request it holds are applied
between requests (the diffusion engine checks between denoising steps).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from schemas.codec import decode_event, encode_event
from schemas.errors import CodecError
from schemas.events import (
    CancelRequested,
    ErrorInfo,
    Event,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    StatusChanged,
    Timings,
    Usage,
)
from schemas.state import ErrorCode, RequestState
from schemas.workers import JobDispatched, WorkerAnnounced
from services.common import kafka as kafka_adapter
from services.common.compacted import partition_for
from services.common.settings import Settings
from services.generator.engine import Engine, Rendered
from services.generator.storage import VideoStore, utc_now

log = logging.getLogger(__name__)
SOURCE = "/framebus/worker"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    max_batch_size: int = 8
    slots: int = 2  # two jobs: the next one is already here when the current one ends
    heartbeat_interval_s: float = 2.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"[:64]


class Worker:
    def __init__(self, *, settings: Settings, engine: Engine, store: VideoStore, config: WorkerConfig) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.config = config
        self._producer = kafka_adapter.producer(settings.bootstrap_servers, linger_ms=2)
        self._jobs: deque[JobDispatched] = deque()
        self._running: set[str] = set()
        self._cancelled: set[tuple[str, str]] = set()
        self._last_seq = -1
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stop = threading.Event()
        self.completed = 0

    # --- announcements ---------------------------------------------------------------------
    def announcement(self, *, stopping: bool = False) -> WorkerAnnounced:
        with self._lock:
            running = tuple(self._running | {job.job_id for job in self._jobs})
            return WorkerAnnounced(worker_id=self.config.worker_id, model=_model_of(self.engine), warm=True,
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
        """Serve until ``stop()`` (or ``max_seconds``); finishes the job in hand before leaving."""
        self.engine.warm()
        consumer = self._jobs_consumer()
        self.announce()
        threads = [threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True),
                   threading.Thread(target=self._read, args=(consumer,), name="jobs-reader", daemon=True)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with self._work:
                    if not self._jobs:
                        self._work.wait(timeout=0.1)
                        continue
                    job = self._jobs.popleft()
                    self._running.add(job.job_id)
                self._serve(job)
        finally:
            self._stop.set()
            threads[1].join(timeout=5)
            self.announce(stopping=True)
            self._producer.flush(timeout=10)
            consumer.close()

    def stop(self) -> None:
        self._stop.set()

    def _read(self, consumer: KafkaConsumer) -> None:
        """Receive jobs and cancels while the main thread renders."""
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
                    event = decode_event(record.headers, record.value).event
                except CodecError as exc:
                    log.warning("ignored an unreadable jobs record: %s", exc)
                    continue
                with self._work:
                    if isinstance(event, JobDispatched) and event.worker_id == self.config.worker_id:
                        self._jobs.append(event)
                        self._last_seq = max(self._last_seq, event.seq)
                        self._work.notify()
                        changed = True
                    elif isinstance(event, CancelRequested):
                        self._cancelled.add((event.tenant_id, event.request_id))
        if changed:
            self.announce()

    def _serve(self, job: JobDispatched) -> None:
        started = utc_now()
        tenant_of = {r.request_id: r.tenant_id for r in job.requests}
        for request in job.requests:
            self._status(request, RequestState.RUNNING, Timings(started_at=started))
        try:
            rendered = self.engine.render(job, lambda rid: (tenant_of[rid], rid) in self._cancelled)
            for item in rendered:
                self._report(job, item, started)
        except Exception as exc:  # noqa: BLE001 - one bad job must not kill the worker
            log.exception("job %s failed", job.job_id)
            for request in job.requests:
                self._fail(request, ErrorCode.GENERATION_ERROR, f"{type(exc).__name__}: {exc}", started)
        finally:
            with self._lock:
                self._running.discard(job.job_id)
            self.announce()

    def _report(self, job: JobDispatched, item: Rendered, started) -> None:
        request = item.request
        common = _common(request, Timings(started_at=started, finished_at=utc_now()))
        usage = Usage(tokens=request.quote(), gpu_seconds=item.gpu_seconds, steps_run=item.steps_run)
        if item.video is None:
            self._send("framebus.results", GenerationCancelled(**common, reason="cancelled while running",
                                                               usage=usage))
            self._status(request, RequestState.CANCELLED, common["timings"])
            return
        try:
            output = self.store.put(request, item.video, utc_now(), shared=item.shared)
        except Exception as exc:  # noqa: BLE001 - reported as the request's failure
            self._fail(request, ErrorCode.STORAGE_ERROR, str(exc), started)
            return
        self._send("framebus.results", GenerationCompleted(**common, output=output, usage=usage,
                                                           seed=request.seed or 0))
        self._status(request, RequestState.COMPLETED, common["timings"], output=output, tokens=usage.tokens)
        self.completed += 1

    def _fail(self, request, code: ErrorCode, message: str, started) -> None:
        common = _common(request, Timings(started_at=started, finished_at=utc_now()))
        error = ErrorInfo(code=code, message=message[:2000])
        self._send("framebus.results", GenerationFailed(**common, error=error))
        self._status(request, RequestState.FAILED, common["timings"], error=error)

    def _status(self, request, state: RequestState, timings: Timings, **extra) -> None:
        self._send("framebus.status", StatusChanged(request_id=request.request_id, tenant_id=request.tenant_id,
                                                    state=state, tier=request.tier, batch_id=request.batch_id,
                                                    timings=timings, **extra))

    def _send(self, topic: str, event: Event) -> None:
        record = encode_event(event, source=SOURCE)
        self._producer.send(self.settings.topic(topic), key=record.key, value=record.value, headers=record.headers)


def _common(request, timings: Timings) -> dict:
    return {"request_id": request.request_id, "tenant_id": request.tenant_id, "tier": request.tier,
            "model": request.model, "batch_id": request.batch_id, "custom_id": request.custom_id,
            "metadata": request.metadata, "timings": timings}


def _model_of(engine: Engine) -> str:
    return engine.model
