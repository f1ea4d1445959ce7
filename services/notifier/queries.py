"""Reading the notifier's topics for the CLI: the attempt log and dead-letter replays."""

from __future__ import annotations

from datetime import UTC, datetime

from kafka import TopicPartition

from framebus.client import FramebusClient
from framebus.kafka import reader
from framebus.schemas.codec import decode_event
from framebus.schemas.webhooks import WebhookAttempted, WebhookDead
from framebus.services.common.compacted import partition_for
from framebus.services.common.errors import KafkaAdapterError
from framebus.services.common.settings import Settings


def _read(settings: Settings, topic: str, key: str | None = None, timeout_s: float = 30.0) -> list:
    name = settings.topic(topic)
    consumer = reader(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(name) or ())
        if not partitions:
            raise KafkaAdapterError(f"topic {name} does not exist; run `framebus up` first")
        if key is not None:
            partitions = [partition_for(key.encode(), len(partitions))]
        tps = [TopicPartition(name, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        events = []
        deadline = datetime.now(UTC).timestamp() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and datetime.now(UTC).timestamp() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                events += [decode_event(r.headers, r.value).event for r in records
                           if r.value is not None and (key is None or r.key == key.encode())]
        return events
    finally:
        consumer.close()


def attempts_for(settings: Settings, request_id: str) -> list[WebhookAttempted]:
    return [e for e in _read(settings, "framebus.webhooks.attempts", request_id) if isinstance(e, WebhookAttempted)]


def replay_dead(settings: Settings, *, request_id: str | None = None, tenant_id: str | None = None) -> int:
    """Put matching dead deliveries back on the pending topic, due now, attempts reset."""
    dead = [e for e in _read(settings, "framebus.webhooks.dead", tenant_id) if isinstance(e, WebhookDead)
            and (request_id is None or e.delivery.request_id == request_id)
            and (tenant_id is None or e.tenant_id == tenant_id)]
    latest = {e.delivery.delivery_id: e.delivery for e in dead}
    with FramebusClient(settings=settings, source="/framebus/cli") as client:
        for delivery in latest.values():
            again = delivery.model_copy(update={"attempt": 0, "due_at": datetime.now(UTC)})
            client.publish(again, "framebus.webhooks.pending").get(timeout=settings.submit_deadline_s)
    return len(latest)
