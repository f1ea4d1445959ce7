"""The scheduler's wiring: the only place it reads settings and builds Kafka clients.

    framebus scheduler

Startup: wait for the lease (one scheduler decides at a time: ``lease.py``), read
framebus.scheduler.backlog (what was live at the last stop), follow framebus.tenants from the
beginning, framebus.ledger from its latest snapshots (``common/ledger_snapshots.py``) and
framebus.status over the dedupe window until caught up, follow
framebus.workers from its end (announcements are live state; workers re-announce every
heartbeat), restore the core, then run on the processor runtime (``common/processor.py``):

- four lanes over one consumer (group ``framebus-scheduler``): interactive requests and
  cancels, standard requests, batch requests, results. Each takes small batches, so an
  interactive request is never read behind thousands of batch records that arrived in a
  burst (measured: a shared faust agent admitted it up to 1.2 s late; a lane, within 10 ms);
- a step every 5 ms that expires, recovers and dispatches.

Delivery: the runtime commits a lane's input only after the broker has acknowledged every
record its decisions produced, so the backlog record of a request is on Kafka before its
input offset is committed. A crash replays uncommitted input; replays find their request
in the backlog or finished on framebus.status and are dropped as duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from framebus.schemas.topics import request_topic
from framebus.services.common import ledger_snapshots
from framebus.services.common.compacted import TopicTable, read_all
from framebus.services.common.hosting import serve
from framebus.services.common.kafka import group_consumer, stream_producer
from framebus.services.common.processor import Lane, Processor, Tick
from framebus.services.common.settings import Settings
from framebus.services.scheduler.authenticate import Authenticator
from framebus.services.scheduler.backlog import BACKLOG_TOPIC
from framebus.services.scheduler.config import SchedulerConfig
from framebus.services.scheduler.handlers import REJECTED_TOPIC, SchedulerHandlers
from framebus.services.scheduler.lease import SchedulerLease

log = logging.getLogger(__name__)
STEP_INTERVAL_S = 0.005
RESULTS_BARRIER_INTERVAL_S = 0.2
GROUP = "framebus-scheduler"
OUTPUTS = (BACKLOG_TOPIC, "framebus.status", "framebus.ledger", "framebus.jobs", "framebus.results", REJECTED_TOPIC)


def lanes(handlers: SchedulerHandlers) -> list[Lane]:
    """Records a lane takes at once: small enough that no lane holds the event loop for long."""
    def requests(tier: str, *extra: str, batch: int) -> Lane:
        return Lane(tier, (request_topic(tier), *extra), handlers.on_input, batch, on_error=handlers.refuse_after_bug)

    return [requests("interactive", "framebus.control", batch=100), requests("standard", batch=200),
            requests("batch", batch=200),
            Lane("results", ("framebus.results",), handlers.on_result, 500, on_error=handlers.skip_result_after_bug)]


class Scheduler:
    """The scheduler's handlers on the runtime, with the clients ``main`` builds."""

    def __init__(self, settings: Settings, config: SchedulerConfig, *, producer, consumer_for, lease,
                 clock=time.time, transactional: bool = False) -> None:
        self.settings = settings
        self.clock = clock
        self.handlers = SchedulerHandlers(config, topic_prefix=settings.topic_prefix,
                                          admission_context=settings.request_context(),
                                          authenticator=Authenticator(
                                              required=settings.signatures_required,
                                              service_keys=settings.accepted_service_keys,
                                              max_age_s=settings.signature_max_age_s))
        self.lease = lease
        self.processor = Processor("scheduler", settings=settings, producer=producer, consumer_for=consumer_for,
                                   lanes=lanes(self.handlers),
                                   ticks=[Tick("step", STEP_INTERVAL_S, self._step)], outputs=OUTPUTS, clock=clock,
                                   transactional=transactional, group_id=f"{settings.topic_prefix}{GROUP}",
                                   followers=lambda: [table.heard_at() for table in self._tables])
        self._tables: list[TopicTable] = []
        self._heartbeats: TopicTable | None = None
        self._swept_at = clock()
        self._results_read_at = float("-inf")  # every result on Kafka at this time has been read

    def _step(self, now: float):
        if now - self._swept_at > 60.0:  # bound the finished index to the dedupe window
            self.handlers.finished.expire(now)
            self.handlers.core.balances.forget_before(now - self.settings.ledger_dedupe_window_s)
            self.handlers.auth.expire(now)
            self._swept_at = now
        # Liveness counts only time in which heartbeats could reach us: when the broker last answered
        # the heartbeats' consumer (wall clock, as aiokafka stamps fetches), in this clock.
        heard = self._heartbeats.heard_at() if self._heartbeats is not None else time.time()
        return self.handlers.step(now, heard_at=now - (time.time() - heard), results_read_at=self._results_read_at)

    async def _follow_results(self) -> None:
        """Keep ``_results_read_at`` current: a lost worker's requests are re-queued only once the
        results lane has read everything that was on the results topic when the worker was lost
        (after a restart that lane rejoins its group later than the heartbeats' table, and a request
        re-queued ahead of its unread result ran twice: 4 of 96 in the broker outage test)."""
        while True:
            started = self.clock()
            try:
                await self.processor.read_to_end("results")
            except KafkaError as exc:  # the broker is away: the barrier holds until it is back
                log.info("results barrier waits for the broker: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._results_read_at = started
            await asyncio.sleep(RESULTS_BARRIER_INTERVAL_S)

    def is_ready(self) -> bool:
        return self.processor.ready.is_set()

    async def run(self) -> None:
        try:
            await self.lease.acquire()  # a second scheduler waits here as a standby
            log.info("scheduler is active")
            await self.restore()
            unobserve = self.handlers.observed()
            try:
                await self.processor.run(tasks=[self.lease.hold, self._follow_results])
            finally:
                for forget in unobserve:
                    forget()
        finally:
            for table in self._tables:
                await table.stop()
            await self.lease.release()  # last: a standby restores only what this one has written

    async def restore(self) -> None:
        bootstrap, topic = self.settings.bootstrap_servers, self.settings.topic
        backlog = await asyncio.to_thread(read_all, bootstrap, topic(BACKLOG_TOPIC), timeout_s=60)
        handlers = self.handlers
        # Announcements free slots: a consumer of their own, so they never queue behind
        # thousands of buffered requests and results (measured: 1.5 s late).
        self._heartbeats = TopicTable(bootstrap, topic("framebus.workers"),
                                      lambda r: handlers.apply_worker(r, self.clock()), from_end=True)
        self._tables = [
            TopicTable(bootstrap, topic("framebus.tenants"), handlers.apply_tenant),
            TopicTable(bootstrap, topic("framebus.signing.keys"), handlers.apply_signing_keys),
            # From the latest snapshot of each ledger partition on, and statuses of the dedupe window
            # only: what is read at start does not grow with history.
            await ledger_snapshots.restored_table(bootstrap, self.settings.topic_prefix, handlers.core.balances,
                                                  handlers.apply_ledger),
            TopicTable(bootstrap, topic("framebus.status"), handlers.finished.apply_record,
                       since_s=handlers.finished.window_s),
            self._heartbeats,
        ]
        for table in self._tables:
            await table.start(catch_up_timeout_s=120)
        requests, jobs = handlers.restore(list(backlog.values()), self.clock())
        log.info("scheduler restored %d live requests in %d jobs and the queue", requests, jobs)


def build(settings: Settings, config: SchedulerConfig | None = None) -> Scheduler:
    config = config or SchedulerConfig.of(
        ttl_s=settings.scheduler_tier_ttl_s, max_queued=settings.scheduler_tier_max_queued,
        aging_s=settings.scheduler_aging_s, worker_timeout_s=settings.scheduler_worker_timeout_s,
        unserved_grace_s=settings.scheduler_unserved_grace_s, unreported_grace_s=settings.scheduler_unreported_grace_s,
        reconnect_grace_s=settings.client_stall_s)
    if settings.signatures_required and not settings.accepted_service_keys:
        log.warning("this scheduler admits signed requests only (Kafka authenticates its clients) but has no "
                    "FRAMEBUS_SERVICE_SIGNING_KEY: what the gateway, tracker and workers send will be refused; "
                    "give the services one key (`framebus acl service-key`) or set FRAMEBUS_REQUEST_SIGNATURES")
    # One transactional id for the role: the active scheduler's producer fences any earlier one
    # (paused, not dead), whose next transaction then fails and stops it.
    producer = stream_producer(settings.bootstrap_servers, transactional_id=f"{settings.topic_prefix}{GROUP}")
    return Scheduler(settings, config, producer=producer, transactional=True,
                     consumer_for=lambda topics: group_consumer(settings, *topics, group=GROUP),
                     lease=SchedulerLease(settings))


def run(settings: Settings | None = None) -> None:
    """Run the scheduler in the foreground until SIGTERM or SIGINT."""
    settings = settings or Settings()
    serve("framebus-scheduler", settings, lambda: build(settings))
