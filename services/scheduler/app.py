"""The scheduler as a faust-streaming app: the only place that reads settings and talks to Kafka.

    framebus scheduler

Startup: read framebus.scheduler.backlog (what was live at the last stop), follow
framebus.tenants, framebus.ledger and framebus.status from the beginning until caught
up, follow framebus.workers from its end (announcements are live state; workers
re-announce every heartbeat), restore the core, then consume requests, cancels and
results (consumer group ``framebus-scheduler``) and run a scheduling step every few ms.

Delivery: every record a decision produces is handed to faust's producer while the
input event is processed; faust flushes the producer before it commits input offsets,
so the backlog record of a request is on Kafka before its input offset is committed.
A crash replays uncommitted input; replays find their request in the backlog or
finished on framebus.status and are dropped as duplicates.

One scheduler instance is active at a time (it owns every worker's credit); run a
second one only as a standby.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import faust

from schemas import limits
from schemas.codec import KafkaRecord, decode, decode_event, written_by
from schemas.errors import CodecError
from schemas.events import CancelRequested, GenerationRequest, TenantUpdated
from schemas.state import ErrorCode, RequestState, Tier
from schemas.topics import REQUEST_TIERS, request_topic
from schemas.workers import JobDispatched, WorkerAnnounced
from services.common.compacted import TopicTable, read_all
from services.common.settings import Settings
from services.common.streams import stream_app
from services.scheduler import records
from services.scheduler.backlog import BACKLOG_TOPIC, BacklogEntry
from services.scheduler.config import SchedulerConfig
from services.scheduler.core import SchedulerCore, SchedulerOutput

log = logging.getLogger(__name__)
STEP_INTERVAL_S = 0.005
TERMINAL_STATES = {state.value for state in RequestState if state.is_terminal}
# Status records of live states, recognised without parsing (the scheduler writes two per request).
LIVE_STATE_MARKS = tuple(f'"state":"{state.value}"'.encode() for state in RequestState if not state.is_terminal)


class SchedulerService:
    def __init__(self, app: faust.App, settings: Settings, config: SchedulerConfig) -> None:
        self.app = app
        self.settings = settings
        self.config = config
        self.tenants: dict[str, TenantUpdated] = {}
        self.finished = FinishedIndex()
        self.core = SchedulerCore(config, tenants=self.tenants.get, is_finished=self.finished.contains)
        self.ready = asyncio.Event()
        self._tables: list[TopicTable] = []
        self.rejected = 0
        self.admission_context = {"webhook_http_hosts": settings.webhook_http_hosts}  # plain-http webhooks allowed

    # --- startup --------------------------------------------------------------------------
    async def start(self) -> None:
        bootstrap = self.settings.bootstrap_servers
        backlog = await asyncio.to_thread(read_all, bootstrap, self.settings.topic(BACKLOG_TOPIC), timeout_s=60)
        self._tables = [
            TopicTable(bootstrap, self.settings.topic("framebus.tenants"), self._apply_tenant),
            TopicTable(bootstrap, self.settings.topic("framebus.ledger"), self._apply_ledger),
            TopicTable(bootstrap, self.settings.topic("framebus.status"), self.finished.apply_record),
            # Announcements free slots: read them apart from faust's consumer, where they would
            # queue behind thousands of buffered requests and results (measured: 1.5 s late).
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
    async def on_request(self, event: faust.EventT) -> None:
        headers = list(event.headers.items())
        try:
            decoded = decode_event(headers, event.value, context=self.admission_context).event
            if not isinstance(decoded, GenerationRequest):
                raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                                 f"request topics carry framebus.generation.requested, not {decoded.event_type}")
            topic_tier = _tier_of(event.message.topic, self.settings.topic_prefix)
            if topic_tier is not None and decoded.tier is not topic_tier:
                raise CodecError(ErrorCode.INVALID_REQUEST,
                                 f"`tier` is {decoded.tier.value} but the record is on the {topic_tier.value} topic")
        except CodecError as exc:
            await self._reject(event, headers, exc)
            return
        out = self.core.submit(decoded, time.time())
        if any(t.code is ErrorCode.UNKNOWN_TENANT for t in out.terminal):  # a bad record, not just a refusal
            await self._send(records.rejected(event.key, event.value, headers, ErrorCode.UNKNOWN_TENANT.value,
                                              out.terminal[0].message))
        await self.publish(out)

    async def on_control(self, event: faust.EventT) -> None:
        decoded = _readable(event, "control record")
        if isinstance(decoded, CancelRequested):
            await self.publish(self.core.cancel(decoded, time.time()))

    def _apply_worker(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, WorkerAnnounced):
            self.core.worker_announced(event, time.time())

    async def on_result(self, event: faust.EventT) -> None:
        # Only the ids matter here, and results come from our own pipeline: read the
        # envelope, skip full model validation (metering validates what it bills).
        try:
            data = decode(list(event.headers.items()), event.value).data
            tenant_id, request_id = data["tenant_id"], data["request_id"]
        except (CodecError, KeyError) as exc:
            log.warning("skipped an unreadable result: %s", exc)
            return
        self.core.request_finished(tenant_id, request_id)
        await self._send(records.tombstone(tenant_id, request_id))

    async def tick(self) -> None:
        await self.publish(self.core.step(time.time()))

    # --- outputs --------------------------------------------------------------------------------
    async def publish(self, out: SchedulerOutput) -> None:
        if not out:
            return
        for pair in records.for_output(out):
            await self._send(pair)
        for duplicate in out.duplicates:  # re-publish its state, so whoever resubmitted sees it
            known = self.finished.record(duplicate.tenant_id, duplicate.request_id)
            if known is not None:
                await self._send(("framebus.status", known))
            else:
                await self._send(records.status(duplicate, self.core.state_of(duplicate)))

    async def _reject(self, event: faust.EventT, headers: list[tuple[str, bytes]], exc: CodecError) -> None:
        self.rejected += 1
        await self._send(records.rejected(event.key, event.value, headers, str(exc.reason), exc.detail))
        known = _tenant_and_request(event.value)
        if known is not None:
            tier = _tier_of(event.message.topic, self.settings.topic_prefix) or Tier.STANDARD
            for pair in records.failed_for_unreadable(*known, tier, str(exc.reason), exc.detail):
                await self._send(pair)

    async def _send(self, pair: tuple[str, KafkaRecord]) -> None:
        name, record = pair
        # Straight to faust's producer (the one it flushes before committing offsets),
        # skipping the per-record channel machinery of Topic.send. No value = a tombstone.
        await self.app.producer.send(self.settings.topic(name), record.key, record.value or None, None, None,
                                     record.headers)


def _readable(event: faust.EventT, what: str):
    """The event in a record of our own services' topics, or None (logged) if it does not decode."""
    try:
        return decode_event(list(event.headers.items()), event.value).event
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
    busy status topic stays cheap.
    """

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], KafkaRecord] = {}

    def apply_record(self, record) -> None:
        if any(mark in record.value for mark in LIVE_STATE_MARKS):
            return
        data = json.loads(record.value)
        if data.get("state") in TERMINAL_STATES:
            self._records[(data["tenant_id"], data["request_id"])] = KafkaRecord(
                record.key, record.value, list(record.headers))

    def contains(self, tenant_id: str, request_id: str) -> bool:
        return (tenant_id, request_id) in self._records

    def record(self, tenant_id: str, request_id: str) -> KafkaRecord | None:
        return self._records.get((tenant_id, request_id))


def create_app(settings: Settings | None = None, config: SchedulerConfig | None = None) -> tuple[faust.App, SchedulerService]:
    settings = settings or Settings()
    app = stream_app("framebus-scheduler", settings)
    config = config or SchedulerConfig(aging_s=settings.scheduler_aging_s,
                                       worker_timeout_s=settings.scheduler_worker_timeout_s)
    service = SchedulerService(app, settings, config)

    def raw(*names: str) -> faust.TopicT:
        return app.topic(*(settings.topic(n) for n in names), key_serializer="raw", value_serializer="raw")

    @app.task
    async def restore() -> None:
        await service.start()

    async def when_ready() -> None:
        await service.ready.wait()

    # One agent per tier: each has its own stream buffer, so an interactive record is
    # never read behind thousands of batch records that arrived in a burst.
    def admit_agent(tier: str) -> None:
        async def admit(stream):
            await when_ready()
            async for event in stream.events():
                await service.on_request(event)

        app.agent(raw(request_topic(tier)), name=f"admit-{tier}")(admit)

    for tier in REQUEST_TIERS:
        admit_agent(tier)

    @app.agent(raw("framebus.control"), name="control")
    async def control(stream):
        await when_ready()
        async for event in stream.events():
            await service.on_control(event)

    @app.agent(raw("framebus.results"), name="results")
    async def results(stream):
        await when_ready()
        async for event in stream.events():
            await service.on_result(event)

    @app.timer(STEP_INTERVAL_S)
    async def step() -> None:
        if service.ready.is_set():
            await service.tick()

    return app, service


def run(settings: Settings | None = None) -> None:
    """Run the scheduler in the foreground until interrupted."""
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()
