"""`framebus notifier`: Standard Webhooks deliveries that are never lost. Kafka and HTTP live here.

Flow: results and completed batches (consumer group ``framebus-notifier``) -> a delivery on the compacted
``framebus.webhooks.pending`` (written and flushed before the result's offset is
committed) -> an in-memory schedule rebuilt from that topic at start -> HTTP attempts,
each logged on ``framebus.webhooks.attempts``. A delivery ends delivered (its pending
record is deleted), or on ``framebus.webhooks.dead`` with the reason (schedule spent,
410 Gone, refused by the SSRF guard, no signing secret), from where
``framebus webhooks replay`` sends it again.

One slow endpoint never holds up another: attempts run as tasks, at most
``webhook_concurrency_per_endpoint`` per host:port, each within ``webhook_timeout_s`` (15 s).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.trace import SpanKind

from framebus import tracing
from framebus.schemas import sources
from framebus.schemas.codec import KafkaRecord, decode_event, encode_event, written_by
from framebus.schemas.errors import CodecError
from framebus.schemas.events import (
    BatchCompleted,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    TenantUpdated,
)
from framebus.schemas.webhooks import (
    WebhookAttempted,
    WebhookDead,
    WebhookDelivery,
    WebhookSecrets,
)
from framebus.services.common import metrics
from framebus.services.common.compacted import TopicTable, partitions_of, read_all, read_since
from framebus.services.common.hosting import serve
from framebus.services.common.kafka import async_reader, group_consumer, stream_producer
from framebus.services.common.processor import Lane, Outputs, Processor
from framebus.services.common.settings import Settings
from framebus.services.notifier.core import (
    Delivered,
    GiveUp,
    Notified,
    Refused,
    RetryAt,
    RetryPolicy,
    check_destination,
    delivery_for,
    delivery_for_batch,
    judge,
    signed_headers,
    subject_of,
)

log = logging.getLogger(__name__)
SOURCE = sources.NOTIFIER
PENDING, ATTEMPTS, DEAD = "framebus.webhooks.pending", "framebus.webhooks.attempts", "framebus.webhooks.dead"
SECRETS = "framebus.webhooks.secrets"
OUTPUTS = (PENDING, ATTEMPTS, DEAD, "framebus.tenants")


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Notifier:
    def __init__(self, settings: Settings, *, rng: random.Random | None = None, clock=time.time) -> None:
        self.settings = settings
        self.policy = RetryPolicy(tuple(settings.webhook_retry_schedule_s))
        self.rng = rng or random.Random()
        self.clock = clock
        self.processor: Processor | None = None
        self._stop_requested = False
        self.tenants: dict[str, TenantUpdated] = {}
        self.secrets: dict[str, tuple[str, ...]] = {}  # tenant -> signing secrets, newest first
        self._schedule: list[tuple[float, str]] = []  # (due, delivery id)
        self._pending: dict[str, WebhookDelivery] = {}
        self.notified = Notified(settings.webhook_dedupe_window_s)
        self._expired_at = clock()
        self._in_flight: set[str] = set()
        self._gates: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.webhook_concurrency_per_endpoint))
        self._tasks: set[asyncio.Task] = set()
        self.delivered = 0
        self.given_up = 0
        self._logged: tuple[int, int, int] = (0, 0, 0)
        self._logged_at = 0.0

    # --- wiring -------------------------------------------------------------------------------
    async def run(self, *, max_seconds: float | None = None) -> None:
        bootstrap = self.settings.bootstrap_servers
        # Follow the pending topic from where it ends now, then load everything before that: replays
        # written by `framebus webhooks replay` while we run are picked up, nothing is missed.
        pending = async_reader(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await pending.start()
        partitions = await asyncio.to_thread(partitions_of, bootstrap, self.settings.topic(PENDING))
        tps = [TopicPartition(self.settings.topic(PENDING), p) for p in sorted(partitions)]
        pending.assign(tps)
        for tp, end in (await pending.end_offsets(tps)).items():
            pending.seek(tp, end)
        for record in (await asyncio.to_thread(read_all, bootstrap, self.settings.topic(PENDING))).values():
            self._schedule_delivery(decode_event(record.headers, record.value).event)
        await asyncio.to_thread(self._recall_notified)
        tenants = TopicTable(bootstrap, self.settings.topic("framebus.tenants"), self._apply_tenant)
        await tenants.start(catch_up_timeout_s=120)
        secrets = TopicTable(bootstrap, self.settings.topic(SECRETS), self._apply_secrets)
        await secrets.start(catch_up_timeout_s=120)
        self.http = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s, follow_redirects=False)
        self.processor = Processor(
            "notifier", settings=self.settings, producer=stream_producer(bootstrap),
            consumer_for=lambda topics: group_consumer(self.settings, *topics, group="framebus-notifier"),
            lanes=[Lane("results", ("framebus.results", "framebus.batches"), self.on_result, 500,
                        on_error=self.skip_after_bug)],
            outputs=OUTPUTS, clock=self.clock)
        log.info("notifier ready: %d deliveries pending", len(self._pending))
        if self._stop_requested:
            self.processor.stop()
        try:
            await self.processor.run(tasks=[lambda: self._forever("dispatch", self._dispatch),
                                            lambda: self._forever("pending", lambda: self._follow_pending(pending))],
                                     max_seconds=max_seconds)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await pending.stop()
            await tenants.stop()
            await secrets.stop()
            await self.http.aclose()

    def _recall_notified(self) -> None:
        """Rebuild what was notified within the window from its attempts (each names its subject)."""
        since = self.clock() - self.notified.window_s
        for record in read_since(self.settings.bootstrap_servers, self.settings.topic(ATTEMPTS), since):
            try:
                attempt = decode_event(record.headers, record.value).event
            except CodecError:
                continue
            if isinstance(attempt, WebhookAttempted):
                self.notified.add(subject_of(attempt.tenant_id, attempt.request_id, attempt.delivery_id),
                                  record.timestamp / 1000)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def stop(self) -> None:
        self._stop_requested = True
        if self.processor is not None:
            self.processor.stop()

    def is_ready(self) -> bool:
        return self.processor is not None and self.processor.ready.is_set()

    async def _forever(self, name: str, loop) -> None:
        """Keep a loop running: Kafka trouble logs and retries; it never silently ends the service.
        Uncommitted results are read again after a restart of the loop, and dedupe on delivery id."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("notifier %s loop failed; restarting it in 1 s", name)
                await asyncio.sleep(1.0)

    def _apply_secrets(self, record) -> None:
        if record.value is None:
            self.secrets.pop(record.key.decode(), None)
            return
        event = decode_event(record.headers, record.value).event
        if isinstance(event, WebhookSecrets):
            self.secrets[event.tenant_id] = event.secrets

    def _apply_tenant(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, TenantUpdated):
            self.tenants[event.tenant_id] = event

    async def _send(self, topic: str, event, *, key: bytes | None = None, tombstone: bool = False) -> None:
        record = KafkaRecord(key, None, []) if tombstone else encode_event(event, source=SOURCE)
        await self.processor.emit(Outputs().add(topic, record), wait=False)

    # --- results in -----------------------------------------------------------------------------
    def on_result(self, record, now: float) -> Outputs:
        """A result or completed batch -> its webhook delivery on the pending topic (the runtime
        commits the result only once that record is on the broker), scheduled in memory."""
        try:
            read = decode_event(record.headers, record.value)
            result = read.event
        except CodecError as exc:  # metering dead-letters unreadable results; nothing to notify
            log.warning("skipped an unreadable result at offset %s: %s", record.offset, exc)
            return Outputs()
        at = datetime.fromtimestamp(now, UTC)
        if isinstance(result, BatchCompleted):
            delivery = delivery_for_batch(result, at)
        elif isinstance(result, (GenerationCompleted, GenerationFailed, GenerationCancelled)):
            delivery = delivery_for(result, at, self.settings.video_link)
        else:
            return Outputs()
        if delivery is None:
            return Outputs()
        if read.envelope.traceparent:
            delivery = delivery.model_copy(update={"traceparent": read.envelope.traceparent})
        subject = subject_of(delivery.tenant_id, delivery.request_id, delivery.delivery_id)
        if delivery.delivery_id in self._pending or subject in self.notified:
            # A replay, or a second terminal result for a request that already has its webhook
            # (a superseded attempt's): the first result in the partition's order is the one notified.
            return Outputs()
        if now - self._expired_at > 60.0:
            self.notified.expire(now, keep={subject_of(d.tenant_id, d.request_id, d.delivery_id)
                                            for d in self._pending.values()})
            self._expired_at = now
        self._schedule_delivery(delivery)
        if isinstance(result, BatchCompleted):
            log.info("batch %s of %s finished: batch.completed webhook queued for %s", result.batch_id,
                     result.tenant_id, endpoint_of(delivery.url))
        return Outputs().add(PENDING, encode_event(delivery, source=SOURCE))

    @staticmethod
    def skip_after_bug(exc: Exception, record, now: float) -> Outputs:  # noqa: ARG004
        log.error("skipped the record at %s/%s/%s: %r", record.topic, record.partition, record.offset, exc)
        return Outputs()

    async def _follow_pending(self, pending: AIOKafkaConsumer) -> None:
        """Deliveries others put on the pending topic (replays). Our own records and tombstones
        are already in memory, and applying them late would resurrect finished deliveries."""
        while True:
            for records in (await pending.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.value is None or written_by(record.headers, SOURCE):
                        continue
                    try:
                        delivery = decode_event(record.headers, record.value).event
                    except CodecError as exc:
                        log.warning("skipped an unreadable pending delivery: %s", exc)
                        continue
                    if isinstance(delivery, WebhookDelivery) and delivery.delivery_id not in self._in_flight:
                        self._schedule_delivery(delivery)

    def _schedule_delivery(self, delivery: WebhookDelivery) -> None:
        self._pending[delivery.delivery_id] = delivery
        self.notified.add(subject_of(delivery.tenant_id, delivery.request_id, delivery.delivery_id), self.clock())
        heapq.heappush(self._schedule, (delivery.due_at.timestamp(), delivery.delivery_id))

    # --- attempts -------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            now = self.clock()
            while self._schedule and self._schedule[0][0] <= now:
                _, delivery_id = heapq.heappop(self._schedule)
                delivery = self._pending.get(delivery_id)
                if delivery is None or delivery_id in self._in_flight or delivery.due_at.timestamp() > now:
                    continue  # finished, already running, or rescheduled later
                self._in_flight.add(delivery_id)
                task = asyncio.create_task(self._attempt(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._log_totals(now)
            await asyncio.sleep(0.02)

    def _log_totals(self, now: float) -> None:
        """Once a minute, when anything moved: what was delivered, what waits, what was given up."""
        totals = (self.delivered, len(self._pending), self.given_up)
        if now - self._logged_at >= 60.0 and totals != self._logged:
            log.info("webhooks since start: %d delivered, %d given up; %d pending", totals[0], totals[2], totals[1])
            self._logged, self._logged_at = totals, now

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            async with self._gates[endpoint_of(delivery.url)]:
                await self._attempt_once(delivery)
        except Exception:  # noqa: BLE001 - the delivery stays pending and is tried again
            log.exception("attempt of %s failed unexpectedly", delivery.delivery_id)
            self._schedule_delivery(delivery.model_copy(update={"due_at": datetime.fromtimestamp(self.clock() + 5,
                                                                                                 UTC)}))
        finally:
            self._in_flight.discard(delivery.delivery_id)

    async def _attempt_once(self, delivery: WebhookDelivery) -> None:
        tenant = self.tenants.get(delivery.tenant_id)
        number = delivery.attempt + 1
        if tenant is not None and delivery.url in tenant.disabled_webhook_urls:
            await self._finish(delivery, number, "disabled", None, "endpoint disabled after 410 Gone", 0.0)
            return
        try:
            await asyncio.to_thread(check_destination, delivery.url, self.settings.webhook_allowed_hosts)
            now = self._now()
            headers = signed_headers(delivery, self.secrets.get(delivery.tenant_id, ()), now)
        except Refused as exc:
            await self._finish(delivery, number, "refused", None, str(exc), 0.0)
            return
        started = time.perf_counter()
        status, error, retry_after = None, None, None
        with tracing.span("webhook attempt", parent=delivery.traceparent, kind=SpanKind.CLIENT, root=False,
                          attributes={
                "framebus.delivery_id": delivery.delivery_id, "framebus.attempt": number,
                "framebus.webhook_type": str(delivery.type), "server.address": endpoint_of(delivery.url)}) as sent:
            try:
                answer = await self.http.post(delivery.url, content=delivery.payload.encode(), headers=headers)
                status, retry_after = answer.status_code, answer.headers.get("retry-after")
                sent.set_attribute("http.response.status_code", status)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:512] or type(exc).__name__
                sent.set_attribute("error.type", type(exc).__name__)
        elapsed_ms = (time.perf_counter() - started) * 1000
        outcome = judge(status, error, retry_after, number, self.policy, self._now(), self.rng)
        if isinstance(outcome, Delivered):
            self.delivered += 1
            if delivery.request_id is None and delivery.batch_id is not None:
                log.info("batch %s: batch.completed webhook delivered (attempt %d)", delivery.batch_id, number)
            await self._send(ATTEMPTS, self._attempted(delivery, number, "delivered", status, None, elapsed_ms))
            await self._send(PENDING, delivery, key=delivery.delivery_id.encode(), tombstone=True)
            self._pending.pop(delivery.delivery_id, None)
        elif isinstance(outcome, RetryAt):
            again = delivery.model_copy(update={"attempt": number, "due_at": outcome.due_at})
            await self._send(ATTEMPTS, self._attempted(delivery, number, "retry", status, error, elapsed_ms,
                                                       outcome.due_at))
            await self._send(PENDING, again)
            self._schedule_delivery(again)
        else:
            assert isinstance(outcome, GiveUp)
            if outcome.disable_endpoint:
                await self._disable(delivery)
            await self._finish(delivery, number, "dead", status, outcome.reason, elapsed_ms, error)

    async def _finish(self, delivery: WebhookDelivery, number: int, outcome: str, status: int | None, reason: str,
                      elapsed_ms: float, error: str | None = None) -> None:
        """No more attempts: the dead-letter topic keeps it for replay."""
        self.given_up += 1
        log.warning("webhook %s to %s given up after %d attempts (%s): %s", delivery.delivery_id,
                    endpoint_of(delivery.url), number, outcome, reason)
        await self._send(ATTEMPTS, self._attempted(delivery, number, outcome, status, error or reason, elapsed_ms))
        await self._send(DEAD, WebhookDead(delivery=delivery.model_copy(update={"attempt": number}),
                                           tenant_id=delivery.tenant_id, reason=reason[:512]))
        await self._send(PENDING, delivery, key=delivery.delivery_id.encode(), tombstone=True)
        self._pending.pop(delivery.delivery_id, None)

    async def _disable(self, delivery: WebhookDelivery) -> None:
        tenant = self.tenants.get(delivery.tenant_id)
        if tenant is None or delivery.url in tenant.disabled_webhook_urls:
            return
        log.warning("tenant %s: webhook endpoint %s disabled (it answered 410 Gone)", tenant.tenant_id,
                    endpoint_of(delivery.url))
        updated = tenant.model_copy(update={"disabled_webhook_urls": (*tenant.disabled_webhook_urls, delivery.url),
                                            "updated_at": self._now()})
        self.tenants[tenant.tenant_id] = updated
        await self._send("framebus.tenants", updated)

    @staticmethod
    def _attempted(delivery: WebhookDelivery, number: int, outcome: str, status: int | None, error: str | None,
                   elapsed_ms: float, next_at: datetime | None = None) -> WebhookAttempted:
        """The attempt's log record (and its count, by kind and outcome)."""
        metrics.webhook_attempts.add(1, {"kind": "request" if delivery.request_id is not None else "batch",
                                         "outcome": outcome})
        return WebhookAttempted(delivery_id=delivery.delivery_id, tenant_id=delivery.tenant_id,
                                request_id=delivery.request_id, url=delivery.url, attempt=number, status_code=status,
                                error=error[:512] if error else None, duration_ms=elapsed_ms, outcome=outcome,
                                next_attempt_at=next_at)


def run(settings: Settings | None = None) -> None:
    """Run the notifier in the foreground until SIGTERM or SIGINT."""
    settings = settings or Settings()
    serve("framebus-notifier", settings, lambda: Notifier(settings))
