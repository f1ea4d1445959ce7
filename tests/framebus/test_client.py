"""The producer SDK against the real broker: what lands on Kafka, byte for byte, and when it refuses."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from framebus.client import FramebusClient, SubmitError
from framebus.infra.kafka import KafkaBroker
from framebus.infra.process import free_port
from framebus.schemas.codec import decode_event
from framebus.schemas.events import SCHEMA_VERSION, CancelRequested
from framebus.schemas.state import RequestState
from framebus.schemas.topics import CATALOGUE
from framebus.services.common.kafka import admin_client, ensure_topics
from framebus.services.common.settings import Settings

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FOX = {"request_id": "fox-1", "prompt": "a red fox running through snow", "tier": "interactive",
       "num_frames": 17, "width": 256, "height": 256}


def raw_records(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list:
    async def read():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        records = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(records) < expected and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


@pytest.fixture
def client(provisioned_settings: Settings):
    with FramebusClient(tenant_id="acme", settings=provisioned_settings) as made:
        yield made


def test_submit_puts_a_cloudevent_on_the_tier_topic_keyed_by_tenant(client: FramebusClient) -> None:
    receipt = client.submit(FOX, traceparent=TRACEPARENT)
    topic = client.settings.topic("framebus.requests.interactive")
    assert receipt.topic == topic and receipt.tokens == 0.288 and receipt.state is RequestState.ACCEPTED
    [record] = raw_records(client.settings.bootstrap_servers, topic, expected=1)
    headers = dict(record.headers)
    assert record.key == b"acme" and (record.partition, record.offset) == (receipt.partition, receipt.offset)
    assert headers["ce_type"] == b"framebus.generation.requested" and headers["ce_subject"] == b"acme"
    assert headers["ce_source"] == b"/framebus/sdk" and headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json" and headers["traceparent"] == TRACEPARENT.encode()
    assert headers["ce_id"].decode() == receipt.event_id
    payload = json.loads(record.value)
    assert payload["schema_version"] == SCHEMA_VERSION and payload["tenant_id"] == "acme"
    assert (payload["model"], payload["num_inference_steps"]) == ("wan-shapes", 20), "defaults are sent spelt out"
    assert {k: payload[k] for k in FOX} == FOX


def test_submit_many_routes_each_tier_and_acknowledges_all(client: FramebusClient) -> None:
    requests = [{**FOX, "request_id": f"bulk-{i}", "tier": tier} for i, tier in
                enumerate(["batch"] * 20 + ["standard"] * 5 + ["interactive"] * 2)]
    receipts = client.submit_many(requests)
    assert [r.request_id for r in receipts] == [r["request_id"] for r in requests]
    assert {r.topic for r in receipts if r.tier.value == "batch"} == {client.settings.topic("framebus.requests.batch")}
    assert end_offsets(client.settings.bootstrap_servers, client.settings.topic("framebus.requests.batch")) == 20


def test_an_invalid_request_raises_and_nothing_reaches_kafka(client: FramebusClient) -> None:
    good = {**FOX, "request_id": "ok-1"}
    with pytest.raises(ValidationError) as caught:
        client.submit_many([good, {**FOX, "request_id": "bad-1", "width": 100, "num_frames": 10}])
    assert {e["loc"][0] for e in caught.value.errors()} == {"width", "num_frames"}
    assert end_offsets(client.settings.bootstrap_servers, client.settings.topic("framebus.requests.interactive")) == 0


def test_status_is_accepted_after_submit_and_private_to_the_tenant(client: FramebusClient) -> None:
    client.submit(FOX)
    status = client.status("fox-1")
    assert status is not None and status.state is RequestState.ACCEPTED and status.tokens == 0.288
    assert client.status("never-submitted") is None
    with FramebusClient(tenant_id="globex", settings=client.settings) as other:
        assert other.status("fox-1") is None


def test_cancel_publishes_a_control_event(client: FramebusClient) -> None:
    client.cancel("fox-1", reason="changed my mind")
    [record] = raw_records(client.settings.bootstrap_servers, client.settings.topic("framebus.control"), expected=1)
    event = decode_event(record.headers, record.value).event
    assert isinstance(event, CancelRequested) and (event.request_id, event.reason) == ("fox-1", "changed my mind")


def test_quote_needs_no_broker_round_trip(client: FramebusClient) -> None:
    assert client.quote({**FOX, "width": 1024, "height": 1024, "num_frames": 81, "num_inference_steps": 50,
                         "prompt": "x" * 100}) == 100.0


def test_a_broker_that_goes_away_gives_a_clear_error_within_the_deadline(tmp_path: Path, infra_cache_dir: Path) -> None:
    broker = KafkaBroker(host="127.0.0.1", port=free_port(), controller_port=free_port(), heap="256m",
                         state_dir=tmp_path, cache_dir=infra_cache_dir)
    broker.start()
    settings = Settings(kafka_bootstrap=broker.endpoint, s3_endpoint="http://127.0.0.1:1", submit_deadline_s=3)
    try:
        admin = admin_client(broker.endpoint)
        ensure_topics(admin, CATALOGUE)
        admin.close()
        client = FramebusClient(tenant_id="acme", settings=settings)
        assert client.submit(FOX).offset == 0
    finally:
        broker.stop()
    started = time.monotonic()
    with pytest.raises(SubmitError, match="not acknowledged by Kafka within 3s|was not sent"):
        client.submit({**FOX, "request_id": "fox-2"})
    assert time.monotonic() - started < 3 + 5
    client.close()
