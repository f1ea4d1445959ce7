"""The worker's transport adapter: announce capacity, take jobs from its partition of
framebus.jobs, and send every request's outcome.

Protocol (see schemas.workers): the worker reads its own partition of framebus.jobs
from the end, announces itself only once its engine is warm, re-announces whenever
its capacity changes and every ``heartbeat_interval_s``, and reports every request of
every job with exactly one result (completed, failed or cancelled) and its status. A
job for another worker id is ignored; a job record it cannot read goes to
framebus.jobs.dead with the reason, and the requests it still names fail.

Kafka outages: a send the broker never acknowledged (a record expired in the producer while
the broker was down) is sent again; a heartbeat or announcement that cannot be sent is
skipped, never fatal to its thread; and a watchdog (``common/watchdog.py``) stops the worker
with ``failure`` set when its producer stays silent while the broker answers, so ``app.run``
exits non-zero and its supervisor restarts it (its jobs move to other workers).

Two stages, so the engine is idle only when there is no work: the render thread (the
caller of ``run``) denoises job N+1 while the output thread encodes, uploads and
reports job N. The hand-off holds at most one rendered job, so memory stays flat.

The decisions are not made here: ``batching`` says what the engine renders, ``finishing``
how each request ends, ``outcomes`` what events an ending sends, ``cancels`` what has been
cancelled. This module moves records between Kafka and those, and owns the threads. Its
producer, jobs consumer, clock and id source are passed in; ``app.py`` builds them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from framebus import tracing
from framebus.schemas import sources
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.errors import CodecError
from framebus.schemas.events import ADMITTED, CancelRequested, Event, GenerationRequest
from framebus.schemas.state import ErrorCode
from framebus.schemas.workers import JobDispatched, WorkerAnnounced, WorkReturned
from framebus.services.common import metrics
from framebus.services.common.compacted import partition_for
from framebus.services.common.deadletters import dead_letter
from framebus.services.common.settings import Settings
from framebus.services.common.watchdog import ClientHealth, ClientWatch
from framebus.services.generator.batching import RenderedRequests, render_job
from framebus.services.generator.cancels import CancelBook
from framebus.services.generator.clock import Clock
from framebus.services.generator.encode import EncodeConfig, EncodedVideo, encode_video
from framebus.services.generator.engine import Engine
from framebus.services.generator.errors import EngineBroken, EngineOutOfMemory, RenderInterrupted
from framebus.services.generator.finishing import Finisher
from framebus.services.generator.outcomes import (
    Completed,
    Publish,
    events_for,
    measure_outcome,
    running,
    trace_outcome,
    unreadable_outcomes,
)
from framebus.services.generator.progress import StepReporter, progress
from framebus.services.generator.rendered import IsCancelled, Item, Rendered
from framebus.services.generator.storage import VideoStore
from framebus.signing import signed_for

__all__ = ["SOURCE", "EngineOutOfMemory", "Utilisation", "Worker", "WorkerConfig"]
log = logging.getLogger(__name__)
SOURCE = sources.WORKER
WORKERS_TOPIC = "framebus.workers"
JOBS_TOPIC = "framebus.jobs"
DEAD_JOBS_TOPIC = "framebus.jobs.dead"
CONTROL_TOPIC = "framebus.control"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    max_batch_size: int = 8
    slots: int = 3  # one denoising, one encoding/uploading, one waiting: the engine never waits for the scheduler
    heartbeat_interval_s: float = 2.0
    machine: str = "cpu"  # machine kind for the cost model


@dataclass(frozen=True)
class RenderedJob:
    """What the render stage hands the output stage."""

    job: JobDispatched
    started: datetime  # when the worker started the job: the requests' started_at
    rendered: RenderedRequests


@dataclass
class Utilisation:
    """Wall time and time in the engine, since the first job arrived (for the bench)."""

    monotonic: Callable[[], float]
    engine_s: float = 0.0
    first_job_at: float | None = None
    idle_since: float | None = None

    def share(self, now: float | None = None) -> float:
        if self.first_job_at is None:
            return 0.0
        end = self.idle_since or (now or self.monotonic())
        return self.engine_s / max(end - self.first_job_at, 1e-9)


class Worker:
    """Serves one partition of framebus.jobs. ``run`` owns ``producer`` and ``jobs_consumer`` once
    called: it assigns the consumer to the worker's partition after the engine is warm, closes
    it when it leaves, and flushes the producer. ``new_id`` names spool files and event ids."""

    def __init__(self, *, settings: Settings, engine: Engine, store: VideoStore, config: WorkerConfig,
                 spool_dir: Path, producer: KafkaProducer, jobs_consumer: KafkaConsumer, clock: Clock,
                 new_id: Callable[[], str], encode: EncodeConfig = EncodeConfig(),
                 probe: Callable[[], bool] = lambda: True) -> None:
        """``probe`` asks the broker over a fresh connection whether it answers (the watchdog's question)."""
        self.settings = settings
        self.engine = engine
        self.store = store
        self.config = config
        self.spool_dir = spool_dir
        self.encode_config = encode
        self.clock = clock
        self._new_id = new_id
        self._producer = producer
        self._consumer = jobs_consumer
        self._finisher = Finisher(store=store, encode=self._encode, clock=clock, engine_id=engine.engine_id,
                                  machine=config.machine)
        self._cancels = CancelBook()
        self._jobs: deque[JobDispatched] = deque()
        self._running: set[str] = set()
        self._last_seq = -1
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._outbox: queue.Queue[RenderedJob | None] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self.completed = 0
        self.utilisation = Utilisation(clock.monotonic)
        self.ready = threading.Event()  # set once warm, reading its partition and announced
        self.watch = ClientWatch(settings.watchdog(), clock.monotonic())
        self._probe = probe
        self._told = ClientHealth.LIVE  # the health last logged
        self._resend: queue.Queue[tuple[str, object, int]] = queue.Queue()  # (topic, record, attempts) the broker never acknowledged
        self.failure: str | None = None  # why the worker stopped itself (its exit is then non-zero)
        self.engine_broken: str | None = None  # the device failed for good: work handed back, exit non-zero
        self.started_at = clock.now()  # tells the scheduler a restart under the same id from a late heartbeat

    # --- announcements ---------------------------------------------------------------------
    def announcement(self, *, stopping: bool = False) -> WorkerAnnounced:
        with self._lock:
            running_ids = tuple(self._running | {job.job_id for job in self._jobs})
            return WorkerAnnounced(worker_id=self.config.worker_id, model=self.engine.model, warm=True,
                                   max_batch_size=self.config.max_batch_size, slots=self.config.slots,
                                   running_job_ids=running_ids, last_job_seq=self._last_seq,
                                   heartbeat_interval_s=self.config.heartbeat_interval_s,
                                   engine=self.engine.name, started_at=self.started_at, stopping=stopping)

    def announce(self, *, stopping: bool = False) -> None:
        """Send the announcement; one that cannot be sent now is skipped (the next heartbeat says it again)."""
        try:
            self._send(WORKERS_TOPIC, self.announcement(stopping=stopping), resend=False)
        except KafkaError as exc:
            log.warning("could not announce: %s", exc)

    def _heartbeat(self) -> None:
        """Announce every interval; send again what the broker never acknowledged; watch the clients.
        Once stopping, say so at once, so the scheduler sends nothing more."""
        while not self._stop.wait(self.config.heartbeat_interval_s):
            self.announce()
            self._send_again()
            self._watch_clients()
        if self.failure is None:
            self.announce(stopping=True)

    def _watch_clients(self) -> None:
        now = self.clock.monotonic()
        if self.watch.health is ClientHealth.LIVE and self._told is not ClientHealth.LIVE:
            log.warning("worker %s: Kafka clients live again", self.config.worker_id)
        self._told = before = self.watch.health
        if not self.watch.should_probe(now):
            return
        health = self.watch.probed(self.clock.monotonic(), self._probe())
        if health is ClientHealth.WEDGED:
            self.failure = self.watch.describe(self.clock.monotonic())
            log.critical("worker %s: %s; stopping for a restart", self.config.worker_id, self.failure)
            self._stop.set()
        elif health is not before:
            log.warning("worker %s: %s", self.config.worker_id, self.watch.describe(self.clock.monotonic()))
        self._told = health

    # --- the loop ------------------------------------------------------------------------------
    def run(self, *, max_seconds: float | None = None) -> None:
        """Serve until ``stop()`` (or ``max_seconds``); finishes the jobs in hand before leaving."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.spool_dir.glob("*.*"):  # left by a crash; the scheduler re-dispatched those requests
            stale.unlink(missing_ok=True)
        self.engine.warm()
        self._follow_own_partition()
        self.announce()
        self.ready.set()
        reader = threading.Thread(target=self._read, name="jobs-reader", daemon=True)
        output = threading.Thread(target=self._output_stage, name="output", daemon=True)
        for thread in (threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True), reader, output):
            thread.start()
        deadline = self.clock.monotonic() + max_seconds if max_seconds else None
        try:
            while not self._stop.is_set() and (deadline is None or self.clock.monotonic() < deadline):
                with self._work:
                    if not self._jobs:
                        if self.utilisation.idle_since is None:
                            self.utilisation.idle_since = self.clock.monotonic()
                        self._work.wait(timeout=0.1)
                        continue
                    job = self._jobs.popleft()
                    self._running.add(job.job_id)
                rendered = self._render_job(job)
                if rendered is None:  # interrupted between denoising steps, or the device broke: stopping
                    self._hand_back(job, f"the worker's device failed: {self.engine_broken}" if self.engine_broken
                                    else "interrupted between denoising steps: the worker is stopping")
                    with self._lock:
                        self._running.discard(job.job_id)
                    break
                self._outbox.put(rendered)
        finally:
            self._stop.set()
            # Wedged: nothing can be sent, so leave at once; the process exits and its jobs move elsewhere.
            if self.failure is None:
                self._finish_and_leave(output, reader)

    def _finish_and_leave(self, output: threading.Thread, reader: threading.Thread) -> None:
        """Deliver what is rendered, hand back what is not, say so, and flush."""
        self._outbox.put(None)
        output.join()
        reader.join(timeout=5)
        with self._lock:
            never_started, self._jobs = list(self._jobs), deque()
        for job in never_started:
            self._hand_back(job, "received but never started: the worker is stopping")
        self.announce(stopping=True)
        try:
            self._producer.flush(timeout=10)
        except KafkaError as exc:
            log.error("records not acknowledged at shutdown: %s", exc)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()

    def _follow_own_partition(self) -> None:
        """Assign the consumer to this worker's partition of framebus.jobs, at its end."""
        topic = self.settings.topic(JOBS_TOPIC)
        partitions = self._consumer.partitions_for_topic(topic) or {0}
        tp = TopicPartition(topic, partition_for(self.config.worker_id.encode(), len(partitions)))
        self._consumer.assign([tp])
        self._consumer.seek_to_end(tp)
        self._consumer.position(tp)  # resolve the end now, before announcing: no job can slip past

    def _read(self) -> None:
        """Receive jobs and cancels while the render thread works (through broker outages)."""
        while not self._stop.is_set():
            try:
                self._take(self._consumer.poll(timeout_ms=100))
            except KafkaError as exc:
                log.warning("reading jobs failed, retrying: %s", exc)
                self._stop.wait(1.0)

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
                if isinstance(event, CancelRequested):
                    self._cancels.cancel(event.tenant_id, event.request_id)
                elif isinstance(event, JobDispatched) and event.worker_id == self.config.worker_id:
                    with self._work:
                        self._jobs.append(event)
                        self._last_seq = max(self._last_seq, event.seq)
                        if self.utilisation.first_job_at is None:
                            self.utilisation.first_job_at = self.clock.monotonic()
                        self.utilisation.idle_since = None
                        self._work.notify()
                    changed = True
        if changed:
            self.announce()

    def _dead_letter(self, record, reason: str, detail: str) -> None:
        """Park an unreadable job record with its reason; fail the requests we can still name."""
        log.warning("unreadable jobs record at offset %s: %s", record.offset, detail)
        parked = dead_letter(record, reason, detail, worker=self.config.worker_id)
        # Through an outage: the records after it in the batch still count.
        self._until_handed_over(DEAD_JOBS_TOPIC, lambda: self._send_record(self.settings.topic(DEAD_JOBS_TOPIC),
                                                                           parked, 0))
        for outcome in unreadable_outcomes(record.value, detail, self.clock.now()):
            self._publish(events_for(outcome))

    # --- render stage ----------------------------------------------------------------------
    def _render_job(self, job: JobDispatched) -> RenderedJob | None:
        """Render a job; None when the worker started stopping during it (between denoising steps)."""
        started = self.clock.now()
        try:
            self._publish(running(request, started) for request in job.requests)
        except KafkaError as exc:  # progress only: the result that follows is what must land
            log.warning("could not report job %s as running: %s", job.job_id, exc)
        try:
            rendered = render_job(job.requests, render=self._timed_render, engine_id=self.engine.engine_id,
                                  cancels=self._cancels,
                                  cached=lambda request, fingerprint: self.store.cached(request, fingerprint,
                                                                                        self.clock.now()))
        except RenderInterrupted:
            return None
        except EngineBroken as exc:
            # Every later call on this device would fail too: hand the job back and leave for a restart.
            self.engine_broken = str(exc)
            log.critical("worker %s: the device is broken (%s); handing work back and stopping for a restart",
                         self.config.worker_id, exc)
            return None
        return RenderedJob(job, started, rendered)

    def _hand_back(self, job: JobDispatched, reason: str) -> None:
        """Give a job's requests back to the scheduler, which queues them again at once."""
        if self.failure is not None:
            return  # wedged: nothing can be sent; the scheduler re-queues them when the heartbeats lapse
        log.info("handing back job %s (%d requests): %s", job.job_id, len(job.requests), reason)
        for request in job.requests:
            self._send(CONTROL_TOPIC, WorkReturned(tenant_id=request.tenant_id, request_id=request.request_id,
                                                   job_id=job.job_id, worker_id=self.config.worker_id, reason=reason))

    def _timed_render(self, requests: list[GenerationRequest], cancelled: IsCancelled) -> list[Rendered]:
        """The engine's render, its time counted in ``utilisation``. Engines ask ``cancelled`` between
        denoising steps; once the worker is stopping, that question raises RenderInterrupted."""
        def cancelled_or_stopping(request: GenerationRequest) -> bool:
            if self._stop.is_set():
                raise RenderInterrupted("the worker is stopping")
            return cancelled(request)

        began = self.clock.monotonic()
        model = {"model": self.engine.model}
        metrics.batch_size.record(len(requests), model)
        metrics.batch_fill.record(len(requests) / self.config.max_batch_size, model)
        try:
            return self.engine.render(requests, cancelled_or_stopping,
                                      StepReporter(requests, self._report_progress, self.clock.monotonic))
        finally:
            busy = self.clock.monotonic() - began
            self.utilisation.engine_s += busy
            metrics.worker_busy.add(busy, model)

    # --- output stage ----------------------------------------------------------------------
    def _output_stage(self) -> None:
        while (done := self._outbox.get()) is not None:
            try:
                for item in done.rendered.items:
                    self._deliver(done, item)
            finally:
                with self._lock:
                    self._running.discard(done.job.job_id)
                self._cancels.forget(done.job.requests)  # the book only holds cancels still useful
                self.announce()

    def _deliver(self, done: RenderedJob, item: Item) -> None:
        """Finish one request and send its result and status; a report that cannot be sent
        is replaced by an INTERNAL_ERROR failure, so the request still ends once."""
        with tracing.within(done.job.traceparents.get(item.request.request_id)):  # its S3 calls join its trace
            outcome = self._finisher.finish(item, started=done.started,
                                            duplicate=done.rendered.is_duplicate(item.request),
                                            is_cancelled=self._cancels.is_cancelled)
        try:
            publishes = list(events_for(outcome))
        except Exception as exc:  # noqa: BLE001 - every request ends in exactly one terminal state
            log.exception("could not report request %s", item.request.request_id)
            publishes = list(events_for(self._finisher.failed(item.request, ErrorCode.INTERNAL_ERROR,
                                                              f"{type(exc).__name__}: {exc}", done.started)))
            outcome = None
        job = done.job
        traceparent = job.traceparents.get(item.request.request_id)
        if outcome is not None:
            measure_outcome(outcome, self.engine.model)
            traceparent = trace_outcome(outcome, traceparent, job_id=job.job_id, worker_id=self.config.worker_id,
                                        batch_size=len(job.requests), shape=job.shape.label())
        if traceparent is not None:
            publishes = [replace(p, traceparent=traceparent) for p in publishes]
        self._publish_until_handed_over(publishes)
        if isinstance(outcome, Completed):
            self.completed += 1

    def _encode(self, item: Rendered) -> EncodedVideo:
        """Encode an item's frames into the spool (the ``Finisher``'s encoder); the upload follows."""
        self._report_progress([progress(item.request, "encoding")])
        video = encode_video(item.frames, item.request.fps, self.spool_dir / f"{self._new_id()}.mp4",
                             self.encode_config)
        self._report_progress([progress(item.request, "uploading")])
        return video

    def _report_progress(self, publishes: Iterable[Publish]) -> None:
        """Send progress lines once each: followers only show them, so one lost costs nothing else."""
        try:
            for publish in publishes:
                self._send(publish.topic, publish.event, resend=False)
        except KafkaError as exc:
            log.debug("a progress line was not sent: %s", exc)

    def _publish_until_handed_over(self, publishes: list[Publish]) -> None:
        """Hand every record to the producer, waiting out a broker outage (the producer blocks, then
        refuses, while it has no metadata); give up only when the worker stops itself as wedged."""
        for publish in publishes:
            if not self._until_handed_over(publish.topic, lambda p=publish: self._send(p.topic, p.event,
                                                                                        traceparent=p.traceparent)):
                return  # the process exits; the scheduler re-runs the request elsewhere

    def _until_handed_over(self, topic: str, send: Callable[[], None]) -> bool:
        """Call ``send`` until the producer takes the record; False if the worker stopped itself as wedged."""
        while self.failure is None:
            try:
                send()
                return True
            except KafkaError as exc:
                log.warning("could not send a %s record (%s); retrying", topic, exc)
                time.sleep(1.0)
        return False

    def _publish(self, publishes: Iterable[Publish]) -> None:
        for publish in publishes:
            self._send(publish.topic, publish.event)

    def _send(self, topic: str, event: Event, *, resend: bool = True, traceparent: str | None = None) -> None:
        """Hand a record to the producer. ``resend``: if the broker never acknowledges it (expired
        while the broker was down), send it again (a result must not vanish)."""
        record = encode_event(event, source=SOURCE, event_id=self._new_id(), traceparent=traceparent)
        self._send_record(self.settings.topic(topic), signed_for(topic, record, self.settings.publishing_key),
                          0 if resend else None)

    def _send_record(self, topic: str, record, attempts: int | None) -> None:
        future = self._producer.send(topic, key=record.key, value=record.value, headers=record.headers)
        future.add_callback(lambda _: self.watch.progressed(self.clock.monotonic()))
        if attempts is not None:
            future.add_errback(lambda exc: self._unacknowledged(topic, record, attempts, exc))

    def _unacknowledged(self, topic: str, record, attempts: int, exc: Exception) -> None:
        # On the producer's I/O thread: queue it; the heartbeat thread sends it again.
        log.warning("a record to %s was not acknowledged (%s); sending it again", topic, exc)
        self._resend.put((topic, record, attempts + 1))

    def _send_again(self) -> None:
        while True:
            try:
                topic, record, attempts = self._resend.get_nowait()
            except queue.Empty:
                return
            try:
                self._send_record(topic, record, attempts)
            except KafkaError as exc:
                log.warning("sending again failed (%s); will retry", exc)
                self._resend.put((topic, record, attempts))
                return
