"""The scheduler as a faust-streaming app: the only place that reads settings and talks to Kafka.

    framebus scheduler

faust hosts the service (worker lifecycle, signals, logging, crash handling); the work
is one task. Startup: read framebus.scheduler.backlog (what was live at the last stop),
follow framebus.tenants, framebus.ledger and framebus.status from the beginning until
caught up, follow framebus.workers from its end (announcements are live state; workers
re-announce every heartbeat), restore the core, then read requests, cancels and results
(consumer group ``framebus-scheduler``) and run a scheduling step every few ms.

Lanes: one consumer, read by four loops over its partitions: interactive requests and
cancels, standard requests, batch requests, results. Each lane takes small batches, so an
interactive request is never read behind thousands of batch records that arrived in a
burst (a faust agent per tier still shared one consumer and its buffers: measured up to
1.2 s late), and a lane never holds the event loop for long.

Delivery: a lane commits a batch's input offsets only after the broker acknowledged
every record its decisions produced, so the backlog record of a request is on Kafka
before its input offset is committed. A crash replays uncommitted input; replays find
their request in the backlog or finished on framebus.status and are dropped as
duplicates. A send the broker refuses crashes the service: its memory would be ahead
of Kafka, and the restart rebuilds it from Kafka.

Why not faust agents: faust's per-event machinery and its consumer thread cost about a
third of the scheduler's CPU per request (py-spy, draining a backlog).

One scheduler is active at a time (it owns every worker's credit): the one holding
the lease (``lease.py``). Others started beside it wait as standbys and take over
when it stops or dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from framebus.schemas import limits
from framebus.schemas.codec import KafkaRecord, decode, decode_event, written_by
from framebus.schemas.errors import CodecError
from framebus.schemas.events import CancelRequested, GenerationRequest, TenantUpdated
from framebus.schemas.state import ErrorCode, RequestState, Tier
from framebus.schemas.topics import REQUEST_TIERS, request_topic
from framebus.schemas.workers import JobDispatched, WorkerAnnounced
from framebus.services.common.compacted import TopicTable, read_all
from framebus.services.common.kafka import group_consumer, stream_producer
from framebus.services.common.settings import Settings
from framebus.services.common.streams import commit_processed, next_offsets, stream_app
from framebus.services.scheduler import records
from framebus.services.scheduler.backlog import BACKLOG_TOPIC, BacklogEntry
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.core import SchedulerCore, SchedulerOutput
from framebus.services.scheduler.lease import SchedulerLease

log = logging.getLogger(__name__)
STEP_INTERVAL_S = 0.005
# Records a lane takes at once: small enough that no lane holds the event loop for long.
LANE_BATCH = {"interactive": 100, "standard": 200, "batch": 200, "results": 500}
TERMINAL_STATES = {state.value for state in RequestState if state.is_terminal}
# Status records of live states, recognised without parsing (the scheduler writes two per request).
LIVE_STATE_MARKS = tuple(f'"state":"{state.value}"'.encode() for state in RequestState if not state.is_terminal)


class SchedulerService:
    def __init__(self, settings: Settings, config: SchedulerConfig) -> None:
        self.settings = settings
        self.config = config
        self.tenants: dict[str, TenantUpdated] = {}
        self.finished = FinishedIndex(config.dedupe_window_s)
        self.core = SchedulerCore(config, tenants=self.tenants.get, is_finished=self.finished.contains)
        self.ready = asyncio.Event()
        self._tables: list[TopicTable] = []
        self._producer: AIOKafkaProducer | None = None
        self._refused: BaseException | None = None  # a send the broker refused: fatal
        self.rejected = 0
        self.admission_context = {"webhook_http_hosts": settings.webhook_http_hosts}  # plain-http webhooks allowed
        self._control_topic = settings.topic("framebus.control")

    # --- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        bootstrap = self.settings.bootstrap_servers
        self._producer = stream_producer(bootstrap)
        consumer = group_consumer(self.settings, *(self.settings.topic(name) for topics, _ in self._lanes().values()
                                                   for name in topics), group="framebus-scheduler")
        lease = SchedulerLease(self.settings)
        loops: list[asyncio.Task] = []
        try:
            await lease.acquire()  # a second scheduler waits here as a standby
            log.info("scheduler is active")
            await self._producer.start()
            await self.restore()
            await consumer.start()
            loops = [asyncio.create_task(self._lane(consumer, name, topics, handler), name=f"lane:{name}")
                     for name, (topics, handler) in self._lanes().items()]
            loops.append(asyncio.create_task(self._steps(), name="steps"))
            loops.append(asyncio.create_task(lease.hold(), name="lease"))
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a lane or the step loop failed: raise it, faust crashes the worker
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await consumer.stop()
            await self.stop()
            await self._producer.stop()
            await lease.release()  # last: a standby restores only what this one has written

    def _lanes(self) -> dict[str, tuple[tuple[str, ...], Callable]]:
        return {"interactive": ((request_topic("interactive"), "framebus.control"), self.on_input),
                "standard": ((request_topic("standard"),), self.on_input),
                "batch": ((request_topic("batch"),), self.on_input),
                "results": (("framebus.results",), self.on_result)}

    async def _lane(self, consumer: AIOKafkaConsumer, name: str, topics: tuple[str, ...], handler) -> None:
        topics = {self.settings.topic(t) for t in topics}
        while True:
            mine = [tp for tp in consumer.assignment() if tp.topic in topics]
            if not mine:  # not assigned yet, or a rebalance moved them away
                await asyncio.sleep(0.1)
                continue
            batches = await consumer.getmany(*mine, timeout_ms=200, max_records=LANE_BATCH[name])
            if not batches:
                continue
            sent: list[asyncio.Future] = []
            for records_of_tp in batches.values():
                for record in records_of_tp:
                    await handler(record, sent)
            await asyncio.gather(*sent)  # every record these decisions produced is on the broker
            await commit_processed(consumer, next_offsets(batches), f"scheduler lane {name}")

    async def _steps(self) -> None:
        swept_at = time.time()
        while True:
            await asyncio.sleep(STEP_INTERVAL_S)
            if self._refused is not None:
                raise self._refused
            now = time.time()
            await self.publish(self.core.step(now), [])
            if now - swept_at > 60.0:  # bound the finished index to the dedupe window
                self.finished.expire(now)
                swept_at = now

    # --- startup --------------------------------------------------------------------------
    async def restore(self) -> None:
        bootstrap = self.settings.bootstrap_servers
        backlog = await asyncio.to_thread(read_all, bootstrap, self.settings.topic(BACKLOG_TOPIC), timeout_s=60)
        self._tables = [
            TopicTable(bootstrap, self.settings.topic("framebus.tenants"), self._apply_tenant),
            TopicTable(bootstrap, self.settings.topic("framebus.ledger"), self._apply_ledger),
            TopicTable(bootstrap, self.settings.topic("framebus.status"), self.finished.apply_record),
            # Announcements free slots: a consumer of their own, so they never queue behind
            # thousands of buffered requests and results (measured: 1.5 s late).
            TopicTable(bootstrap, self.settings.topic("framebus.workers"), self._apply_worker, from_end=True),
        ]
        for table in self._tables:
            await table.start(catch_up_timeout_s=120)
        entries = [BacklogEntry.decode(record.value) for record in backlog.values() if record.value]
        jobs = _jobs_of(entries)
        self.core.restore([e.queued() for e in entries], jobs, time.time())
        log.info("scheduler restored %d live requests (%d in %d jobs)", len(entries),
                 sum(len(j.requests) for j in jobs), len(jobs))
        self.ready.set()

    async def stop(self) -> None:
        for table in self._tables:
            await table.stop()

    def _apply_tenant(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, TenantUpdated):
            self.tenants[event.tenant_id] = event

    def _apply_ledger(self, record) -> None:
        if self.ready.is_set() and written_by(record.headers, records.SOURCE):
            return  # our own reservation or release, folded when it was made; skip decoding it again
        self.core.ledger(decode_event(record.headers, record.value).event)  # type: ignore[arg-type]

    # --- inputs -------------------------------------------------------------------------------
    async def on_input(self, record: ConsumerRecord, sent: list) -> None:
        if record.topic == self._control_topic:
            await self.on_control(record, sent)
        else:
            await self.on_request(record, sent)

    async def on_request(self, record: ConsumerRecord, sent: list) -> None:
        headers = list(record.headers)
        try:
            decoded = decode_event(headers, record.value, context=self.admission_context).event
            if not isinstance(decoded, GenerationRequest):
                raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                                 f"request topics carry framebus.generation.requested, not {decoded.event_type}")
            topic_tier = _tier_of(record.topic, self.settings.topic_prefix)
            if topic_tier is not None and decoded.tier is not topic_tier:
                raise CodecError(ErrorCode.INVALID_REQUEST,
                                 f"`tier` is {decoded.tier.value} but the record is on the {topic_tier.value} topic")
        except CodecError as exc:
            await self._reject(record, headers, exc, sent)
            return
        try:
            out = self.core.submit(decoded, time.time())
        except Exception as exc:  # a bug met by one request must not stop the scheduler for all
            log.exception("the scheduler failed on request %s/%s", decoded.tenant_id, decoded.request_id)
            await self._reject(record, headers, CodecError(ErrorCode.INTERNAL_ERROR.value,
                                                           f"the scheduler failed on this request: {exc!r}"), sent)
            return
        if any(t.code is ErrorCode.UNKNOWN_TENANT for t in out.terminal):  # a bad record, not just a refusal
            await self._send(records.rejected(record.key, record.value, headers, ErrorCode.UNKNOWN_TENANT.value,
                                              out.terminal[0].message), sent)
        await self.publish(out, sent)

    async def on_control(self, record: ConsumerRecord, sent: list) -> None:
        decoded = _readable(record, "control record")
        if isinstance(decoded, CancelRequested):
            await self.publish(self.core.cancel(decoded, time.time()), sent)

    def _apply_worker(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, WorkerAnnounced):
            self.core.worker_announced(event, time.time())

    async def on_result(self, record: ConsumerRecord, sent: list) -> None:
        # Only the ids matter here, and results come from our own pipeline: read the
        # envelope, skip full model validation (metering validates what it bills).
        try:
            data = decode(list(record.headers), record.value).data
            tenant_id, request_id = data["tenant_id"], data["request_id"]
        except (CodecError, KeyError) as exc:
            log.warning("skipped an unreadable result: %s", exc)
            return
        self.core.request_finished(tenant_id, request_id)
        await self._send(records.tombstone(tenant_id, request_id), sent)

    # --- outputs --------------------------------------------------------------------------------
    async def publish(self, out: SchedulerOutput, sent: list) -> None:
        if not out:
            return
        for pair in records.for_output(out):
            await self._send(pair, sent)
        for duplicate in out.duplicates:  # re-publish its state, so whoever resubmitted sees it
            known = self.finished.record(duplicate.tenant_id, duplicate.request_id)
            if known is not None:
                await self._send(("framebus.status", known), sent)
            else:
                await self._send(records.status(duplicate, self.core.state_of(duplicate)), sent)

    async def _reject(self, record: ConsumerRecord, headers: list[tuple[str, bytes]], exc: CodecError,
                      sent: list) -> None:
        self.rejected += 1
        await self._send(records.rejected(record.key, record.value, headers, str(exc.reason), exc.detail), sent)
        known = _tenant_and_request(record.value)
        if known is not None:
            tier = _tier_of(record.topic, self.settings.topic_prefix) or Tier.STANDARD
            for pair in records.failed_for_unreadable(*known, tier, str(exc.reason), exc.detail):
                await self._send(pair, sent)

    async def _send(self, pair: tuple[str, KafkaRecord], sent: list) -> None:
        """Hand a record to the producer; its delivery future joins ``sent``. No value = a tombstone."""
        assert self._producer is not None
        name, record = pair
        future = await self._producer.send(self.settings.topic(name), record.value or None, record.key,
                                           headers=record.headers)
        future.add_done_callback(self._delivered)
        sent.append(future)

    def _delivered(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None and self._refused is None:
            log.critical("the broker refused a scheduler record; stopping: %s", future.exception())
            self._refused = future.exception()


def _readable(record: ConsumerRecord, what: str):
    """The event in a record of our own services' topics, or None (logged) if it does not decode."""
    try:
        return decode_event(list(record.headers), record.value).event
    except CodecError as exc:
        log.warning("skipped an unreadable %s: %s", what, exc)
        return None


def _jobs_of(entries: list[BacklogEntry]) -> list[JobDispatched]:
    grouped: dict[str, list[BacklogEntry]] = {}
    for entry in entries:
        if entry.job_id is not None:
            grouped.setdefault(entry.job_id, []).append(entry)
    return [JobDispatched(job_id=job_id, worker_id=members[0].worker_id, seq=members[0].job_seq or 0,
                          shape=members[0].shape, requests=tuple(m.request for m in members),
                          attempt=max(m.attempt for m in members))
            for job_id, members in grouped.items()]


def _tier_of(topic: str, prefix: str) -> Tier | None:
    name = topic.removeprefix(prefix)
    return next((Tier(t) for t in REQUEST_TIERS if name == request_topic(t)), None)


def _tenant_and_request(value: bytes | None) -> tuple[str, str] | None:
    """Tenant and request id of an unreadable record, if it names valid ones."""
    try:
        data = json.loads(value or b"")
        tenant, request = data["tenant_id"], data["request_id"]
    except (ValueError, TypeError, KeyError):
        return None
    if (isinstance(tenant, str) and isinstance(request, str) and re.match(limits.TENANT_ID_PATTERN, tenant)
            and re.match(limits.REQUEST_ID_PATTERN, request)):
        return tenant, request
    return None


class FinishedIndex:
    """Requests that ended, from framebus.status: their last status record, kept as it came.

    Only terminal records are kept and only their state is parsed, so following the
    busy status topic stays cheap. Records older than the dedupe window (by their Kafka
    timestamp) are dropped: a resubmission after that is a new request anyway, and the
    index would otherwise grow with every request ever finished.
    """

    def __init__(self, window_s: float = float("inf")) -> None:
        self.window_s = window_s
        self._records: dict[tuple[str, str], tuple[float, KafkaRecord]] = {}

    def apply_record(self, record) -> None:
        if any(mark in record.value for mark in LIVE_STATE_MARKS):
            return
        now = time.time()
        written_at = record.timestamp / 1000 if getattr(record, "timestamp", None) else now
        if now - written_at >= self.window_s:
            return
        data = json.loads(record.value)
        if data.get("state") in TERMINAL_STATES:
            self._records[(data["tenant_id"], data["request_id"])] = (written_at, KafkaRecord(
                record.key, record.value, list(record.headers)))

    def expire(self, now: float) -> None:
        self._records = {key: kept for key, kept in self._records.items() if now - kept[0] < self.window_s}

    def __len__(self) -> int:
        return len(self._records)

    def contains(self, tenant_id: str, request_id: str) -> bool:
        return (tenant_id, request_id) in self._records

    def record(self, tenant_id: str, request_id: str) -> KafkaRecord | None:
        kept = self._records.get((tenant_id, request_id))
        return kept[1] if kept is not None else None


def create_app(settings: Settings | None = None, config: SchedulerConfig | None = None) -> tuple[faust.App, SchedulerService]:
    settings = settings or Settings()
    # Not "framebus-scheduler": that is the input consumer group, and faust's own (idle)
    # consumer would join it with another assignment protocol.
    app = stream_app("framebus-scheduler-app", settings)
    config = config or SchedulerConfig(aging_s=settings.scheduler_aging_s,
                                       worker_timeout_s=settings.scheduler_worker_timeout_s)
    service = SchedulerService(settings, config)

    @app.task
    async def schedule() -> None:
        await service.run()

    return app, service


def run(settings: Settings | None = None) -> None:
    """Run the scheduler in the foreground until interrupted."""
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()
