"""Metering's wiring: the only place metering reads settings and builds Kafka clients.

    framebus metering

Startup: fold framebus.ledger from its latest snapshots until caught up (balances, and which
requests are settled), then keep following it, then read framebus.results (consumer group
``framebus-metering``) on the processor runtime in batches of up to ``BATCH`` records. For
each worker result not yet settled it writes the usage record and the ledger entry and
applies the entry to its fold at once. Each results partition's outputs and its input offset
commit in one transaction of that partition's own producer (transactional id
``framebus-metering:<topic>:<partition>``): after a crash nothing committed is read again, and
a paused instance whose partitions moved on is fenced by their new owner. Before settling a
partition it has just taken over, an instance folds the ledger to its end; the fold settles a
request once whatever arrives twice, so each request is charged or released exactly once.

Beside that, its ``LedgerCompactor`` folds the ledger as committed and writes each
partition's snapshot every ``FRAMEBUS_LEDGER_SNAPSHOT_INTERVAL_S`` (``common/ledger_snapshots.py``).

A result record that does not decode, or that metering fails on, goes to
framebus.results.dead with the reason; metering keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from opentelemetry.trace import SpanKind

from framebus import tracing
from framebus.schemas import sources
from framebus.schemas.codec import decode_event, encode_event, written_by
from framebus.schemas.errors import CodecError
from framebus.schemas.events import GenerationCancelled, GenerationCompleted, GenerationFailed, LedgerCharged
from framebus.schemas.state import ErrorCode
from framebus.services.common import ledger_snapshots, metrics
from framebus.services.common.compacted import TopicTable
from framebus.services.common.deadletters import dead_letter
from framebus.services.common.hosting import serve
from framebus.services.common.kafka import group_consumer, snapshot_producer, stream_producer
from framebus.services.common.ledger_snapshots import LedgerCompactor
from framebus.services.common.processor import Lane, Outputs, Processor
from framebus.services.common.settings import Settings
from framebus.services.metering.core import Metering

log = logging.getLogger(__name__)
BATCH = 2000
DEAD_RESULTS_TOPIC = "framebus.results.dead"
RESULT_TYPES = (GenerationCompleted, GenerationFailed, GenerationCancelled)
OUTPUTS = ("framebus.usage", "framebus.ledger", DEAD_RESULTS_TOPIC)
GROUP = "framebus-metering"


class MeteringHandlers:
    """What one results record makes metering write (pure; the runtime sends it)."""

    def __init__(self, *, instance: str) -> None:
        self.core = Metering()
        # Per instance: another metering instance's entries must be folded, only our own skipped.
        self.source = f"{sources.METERING}/{instance}"
        self.folded = False  # once caught up, our own entries were folded when made
        self.metered = 0
        self.dead = 0

    def apply_ledger(self, record) -> None:
        if self.folded and written_by(record.headers, self.source):
            return
        try:
            self.core.ledger(decode_event(record.headers, record.value).event)  # type: ignore[arg-type]
        except CodecError as exc:  # the ledger is ours; an unreadable entry is logged, never fatal
            log.error("unreadable ledger entry at offset %s: %s", record.offset, exc)

    def meter(self, record, now: float = 0.0) -> Outputs:  # noqa: ARG002 - the runtime's handler signature
        """Usage and ledger entries for a worker's result, a dead letter, or nothing (already settled)."""
        try:
            decoded = decode_event(list(record.headers), record.value)
            result = decoded.event
            if not isinstance(result, RESULT_TYPES):
                raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                                 f"framebus.results carries generation results, not {result.event_type}")
        except CodecError as exc:
            self.dead += 1
            return Outputs().add(DEAD_RESULTS_TOPIC, dead_letter(record, str(exc.reason), exc.detail))
        with tracing.span("settle", parent=decoded.envelope.traceparent, kind=SpanKind.CONSUMER, root=False, attributes={
                "framebus.tenant": result.tenant_id, "framebus.request_id": result.request_id,
                "framebus.outcome": result.outcome}) as settling:
            metered = self.core.result(result, decoded.envelope.source)
            settling.set_attribute("framebus.settled", bool(metered.ledger))
            if metered.skipped:
                settling.set_attribute("framebus.skipped", metered.skipped)
            for entry in metered.ledger:
                settling.set_attribute("framebus.tokens", entry.tokens)
        out = Outputs()
        for usage in metered.usage:
            out.add("framebus.usage", encode_event(usage, source=self.source,
                                                   event_id=f"usage:{usage.tenant_id}/{usage.request_id}"))
        for entry in metered.ledger:
            out.add("framebus.ledger", encode_event(entry, source=self.source, event_id=entry.entry_id))
        if metered.ledger:
            self.metered += 1
            measure_settled(result, metered.ledger)
        return out

    def dead_letter_after_bug(self, exc: Exception, record, now: float) -> Outputs:  # noqa: ARG002
        self.dead += 1
        return Outputs().add(DEAD_RESULTS_TOPIC, dead_letter(record, ErrorCode.INTERNAL_ERROR.value,
                                                             f"metering failed: {exc!r}"))


def measure_settled(result, ledger) -> None:
    """A result settled for the first time: tokens charged per tenant, and its end-to-end time."""
    for entry in ledger:
        if isinstance(entry, LedgerCharged):
            metrics.tokens_settled.add(entry.tokens, {"tenant": result.tenant_id, "tier": result.tier.value})
    timings = result.timings
    if timings.accepted_at is not None and timings.finished_at is not None:
        metrics.request_duration.record(max(0.0, (timings.finished_at - timings.accepted_at).total_seconds()),
                                        {"tier": result.tier.value, "outcome": result.outcome})


def lanes(handlers: MeteringHandlers) -> list[Lane]:
    return [Lane("results", ("framebus.results",), handlers.meter, BATCH, on_error=handlers.dead_letter_after_bug)]


class MeteringService:
    def __init__(self, settings: Settings, *, producer, consumer_for, instance: str, clock=time.time,
                 producer_per_partition=None, snapshot_producer=None) -> None:
        self.settings = settings
        self.clock = clock
        self.handlers = MeteringHandlers(instance=instance)
        self.ledger: TopicTable | None = None  # from the latest snapshots on, at ``run``
        self.compactor = LedgerCompactor(settings.bootstrap_servers, settings.topic_prefix, snapshot_producer,
                                         window_s=settings.ledger_dedupe_window_s,
                                         interval_s=settings.ledger_snapshot_interval_s, clock=clock)
        self.processor = Processor("metering", settings=settings, producer=producer, consumer_for=consumer_for,
                                   lanes=lanes(self.handlers), outputs=OUTPUTS, clock=clock,
                                   group_id=f"{settings.topic_prefix}{GROUP}",
                                   producer_per_partition=producer_per_partition, on_assigned=self._fold_to_end)

    async def _fold_to_end(self, assigned) -> None:  # noqa: ARG002 - the runtime's hook signature
        """Before settling a partition just taken over: fold every ledger entry its previous owner
        committed (the partitions' producers are initialised by now, so its transactions are closed),
        or a second result for a request it settled would be settled again."""
        assert self.ledger is not None
        await self.ledger.read_to_end()

    async def _forget(self) -> None:
        """Keep the fold's dedupe memory to its window (what was settled before it stays settled in the sums)."""
        while True:
            self.handlers.core.balances.forget_before(self.clock() - self.settings.ledger_dedupe_window_s)
            await asyncio.sleep(60.0)

    def is_ready(self) -> bool:
        return self.processor.ready.is_set()

    async def run(self) -> None:
        self.ledger = ledger = await ledger_snapshots.restored_table(
            self.settings.bootstrap_servers, self.settings.topic_prefix, self.handlers.core.balances,
            self.handlers.apply_ledger)
        try:
            await ledger.start(catch_up_timeout_s=300)
            self.handlers.folded = True
            log.info("metering folded the ledger: %d tenants", len(self.handlers.core.balances.tenants()))
            tasks = [self._forget]
            if self.compactor.producer is not None:
                tasks.append(self.compactor.run)
            await self.processor.run(tasks=tasks)
        finally:
            await ledger.stop()
            if self.compactor.table is not None:
                await self.compactor.table.stop()


def build(settings: Settings) -> MeteringService:
    instance = uuid.uuid4().hex[:12]
    # Usage and ledger entries commit in one transaction with the results they settle, through a
    # producer per results partition whose transactional id names the partition: a crash or a
    # rebalance replays nothing that was written, and an instance that was paused while its
    # partitions moved on is fenced by their new owner (it stops; nothing it sends counts).
    return MeteringService(
        settings, producer=stream_producer(settings.bootstrap_servers), instance=instance,
        snapshot_producer=snapshot_producer(settings.bootstrap_servers),
        producer_per_partition=lambda tp: stream_producer(
            settings.bootstrap_servers, transactional_id=f"{settings.topic_prefix}{GROUP}:{tp.topic}:{tp.partition}"),
        consumer_for=lambda topics: group_consumer(settings, *topics, group=GROUP,
                                                   max_partition_fetch_bytes=4 * 1024 * 1024))


def run(settings: Settings | None = None) -> None:
    """Run metering in the foreground until SIGTERM or SIGINT."""
    settings = settings or Settings()
    serve("framebus-metering", settings, lambda: build(settings))
