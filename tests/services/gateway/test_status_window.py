"""The gateway holds statuses for FRAMEBUS_STATUS_RETENTION_DAYS only: a replica started now reads
that window of framebus.status (older records are never fetched), and a long-running one forgets
rows as they age past it, so neither start-up nor memory grows with the topic's history."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.events import StatusChanged
from framebus.schemas.state import RequestState
from framebus.services.common.stack import Stack
from framebus.services.gateway.tables import StatusTable
from framebus.services.gateway.tenants import TenantAdmin
from tests.services.gateway.conftest import start_gateway

DAY = timedelta(days=1)


def _status(request_id: str, written: datetime, state: str = "completed", tenant: str = "acme") -> StatusChanged:
    return StatusChanged(request_id=request_id, tenant_id=tenant, state=state, tier="standard", updated_at=written)


def _publish(bootstrap: str, topic: str, *statuses: StatusChanged) -> None:
    """Each status as the pipeline writes it, its Kafka timestamp the time it claims."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for status in statuses:
        record = encode_event(status, source="/tests")
        producer.send(topic, key=record.key, value=record.value, headers=record.headers,
                      timestamp_ms=int(status.updated_at.timestamp() * 1000))
    producer.flush(10)
    producer.close()


def _request_ids_on(bootstrap: str, topic: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends, found = consumer.end_offsets(tps), set()
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                found |= {decode_event(r.headers, r.value).event.request_id for r in records}
        return found
    finally:
        consumer.close()


def test_a_gateway_reads_only_the_retention_window_of_statuses(server_settings, tmp_path) -> None:
    settings = server_settings.model_copy(update={"topic_prefix": f"gw.window.{uuid.uuid4().hex[:8]}.",
                                                  "s3_bucket": f"gw-window-{uuid.uuid4().hex[:8]}"})
    Stack(settings).up()  # the topic keeps 30 days: the records below stay on it
    with FramebusClient(settings=settings, source="/tests") as client:
        admin = TenantAdmin(client)
        admin.create("acme")
        key = admin.issue_key("acme").plaintext
    now = datetime.now(UTC)
    old, inside, fresh = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("old", "inside", "fresh"))
    topic = settings.topic("framebus.status")
    _publish(settings.bootstrap_servers, topic, _status(old, now - 10 * DAY), _status(inside, now - 1 * DAY),
             _status(fresh, now, state="running"))
    assert {old, inside, fresh} <= _request_ids_on(settings.bootstrap_servers, topic), "all three are on the topic"

    window = settings.model_copy(update={"status_retention_days": 2})
    process, url = start_gateway(window, tmp_path / "gateway.log")
    try:
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/v1/generations/{inside}", headers=auth).json()["state"] == "completed"
        assert httpx.get(f"{url}/v1/generations/{fresh}", headers=auth).json()["state"] == "running"
        gone = httpx.get(f"{url}/v1/generations/{old}", headers=auth)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        # A status written after start is followed as before.
        later = f"later-{uuid.uuid4().hex[:8]}"
        _publish(settings.bootstrap_servers, topic, _status(later, datetime.now(UTC), state="queued"))
        deadline = time.monotonic() + 15
        while (answer := httpx.get(f"{url}/v1/generations/{later}", headers=auth)).status_code == 404:
            assert time.monotonic() < deadline, "the gateway did not follow a new status"
            time.sleep(0.1)
        assert answer.json()["state"] == "queued"
    finally:
        terminate(process.pid, timeout_s=10)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_running_table_forgets_rows_as_they_age_past_the_retention() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    clock = Clock(start)
    table = StatusTable(keep_s=2 * 86400, clock=clock)
    for day in range(10):  # one request finishing a day, the clock following
        clock.now = (start + day * DAY).timestamp()
        table.apply(_status(f"r{day}", start + day * DAY))
    assert len(table) == 3, "today's and the two days before: what a replica started now would read"
    assert [table.get("acme", f"r{day}") is not None for day in range(10)] == [False] * 7 + [True] * 3
    clock.now += 1.5 * 86400  # idle: nothing applied, yet a row past the retention is unknown
    assert table.get("acme", "r7") is None and table.get("acme", "r9").state is RequestState.COMPLETED
    assert not table.is_finished("acme", "r7")


def test_a_row_that_moves_on_is_kept_by_its_latest_state() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    clock = Clock(start)
    table = StatusTable(keep_s=86400, clock=clock)
    table.apply(_status("long", start, state="queued"))
    table.apply(_status("other", start + 0.5 * DAY, state="queued"))
    clock.now = (start + 1.2 * DAY).timestamp()
    table.apply(_status("long", start + 1.2 * DAY, state="running"))  # it moved: it stays
    assert table.get("acme", "long").state is RequestState.RUNNING and len(table) == 2
    clock.now = (start + 1.6 * DAY).timestamp()
    table.apply(_status("new", start + 1.6 * DAY, state="queued"))
    assert table.get("acme", "other") is None and table.get("acme", "long") is not None


def test_without_a_retention_every_row_is_kept() -> None:
    table = StatusTable()
    for day in range(5):
        table.apply(_status(f"r{day}", datetime(2020, 1, 1 + day, tzinfo=UTC)))
    assert len(table) == 5 and table.get("acme", "r0") is not None
