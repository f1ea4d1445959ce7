"""Metering as a faust-streaming app: the only place metering reads settings and talks to Kafka.

    framebus metering

Startup: fold framebus.ledger from the beginning until caught up (balances, and which
requests are settled), then keep following it, then consume framebus.results (consumer
group ``framebus-metering``). For each worker result not yet settled it writes the usage
record and the ledger entry through faust's producer and applies the entry to its fold
at once; faust flushes the producer before committing the result's offset. After a
crash, results past the last commit are read again and skipped as already settled (the
fold has their entries), so each request is charged or released exactly once.

A result record that does not decode goes to framebus.results.dead with the reason;
metering keeps going.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from schemas.codec import KafkaRecord, decode_event, encode_event, written_by
from schemas.errors import CodecError
from schemas.events import GenerationCancelled, GenerationCompleted, GenerationFailed
from schemas.state import ErrorCode
from services.common.compacted import TopicTable
from services.common.settings import Settings
from services.common.streams import stream_app
from services.metering.core import Metering

log = logging.getLogger(__name__)
SOURCE = "/framebus/metering"
BATCH, BATCH_WITHIN_S = 500, 0.02
DEAD_RESULTS_TOPIC = "framebus.results.dead"
RESULT_TYPES = (GenerationCompleted, GenerationFailed, GenerationCancelled)


class MeteringService:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.core = Metering()
        self.ready = asyncio.Event()
        self._ledger: TopicTable | None = None
        self.metered = 0
        self.dead = 0

    async def start(self) -> None:
        self._ledger = TopicTable(self.settings.bootstrap_servers, self.settings.topic("framebus.ledger"),
                                  self._apply_ledger)
        await self._ledger.start(catch_up_timeout_s=300)
        log.info("metering folded the ledger: %d tenants", len(self.core.balances.tenants()))
        self.ready.set()

    async def stop(self) -> None:
        if self._ledger is not None:
            await self._ledger.stop()

    def _apply_ledger(self, record) -> None:
        # Entries this process wrote were folded when written; only a restart needs them again.
        if self.ready.is_set() and written_by(record.headers, SOURCE):
            return
        try:
            self.core.ledger(decode_event(record.headers, record.value).event)  # type: ignore[arg-type]
        except CodecError as exc:  # the ledger is ours; an unreadable entry is logged, never fatal
            log.error("unreadable ledger entry at offset %s: %s", record.offset, exc)

    async def on_result(self, event: faust.EventT) -> None:
        headers = list(event.headers.items())
        try:
            decoded = decode_event(headers, event.value)
            result = decoded.event
            if not isinstance(result, RESULT_TYPES):
                raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                                 f"framebus.results carries generation results, not {result.event_type}")
        except CodecError as exc:
            self.dead += 1
            # Where it came from: after a crash the same record may be dead-lettered again, and
            # readers drop copies by this position.
            message = event.message
            extra = [("framebus-dead-reason", str(exc.reason).encode()),
                     ("framebus-dead-detail", exc.detail[:2000].encode()),
                     ("framebus-dead-source", f"{message.topic}/{message.partition}/{message.offset}".encode())]
            await self._send(DEAD_RESULTS_TOPIC, KafkaRecord(event.key, event.value or b"", [*headers, *extra]))
            return
        metered = self.core.result(result, decoded.envelope.source)
        for usage in metered.usage:
            await self._send("framebus.usage", encode_event(usage, source=SOURCE,
                                                            event_id=f"usage:{usage.tenant_id}/{usage.request_id}"))
        for entry in metered.ledger:
            await self._send("framebus.ledger", encode_event(entry, source=SOURCE, event_id=entry.entry_id))
        if metered.ledger:
            self.metered += 1

    async def _send(self, topic: str, record: KafkaRecord) -> None:
        await self.app.producer.send(self.settings.topic(topic), record.key, record.value, None, None, record.headers)


def create_app(settings: Settings | None = None) -> tuple[faust.App, MeteringService]:
    settings = settings or Settings()
    app = stream_app("framebus-metering", settings)
    service = MeteringService(app, settings)
    results = app.topic(settings.topic("framebus.results"), key_serializer="raw", value_serializer="raw")

    @app.task
    async def fold_ledger() -> None:
        await service.start()

    @app.agent(results, name="meter")
    async def meter(stream):
        await service.ready.wait()
        # In batches: faust's per-event machinery costs more than metering one result does.
        async for events in stream.take_events(BATCH, within=BATCH_WITHIN_S):
            for event in events:
                await service.on_result(event)

    return app, service


def run(settings: Settings | None = None) -> None:
    """Run metering in the foreground until interrupted."""
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()
