"""The smoke check: one CloudEvent through Kafka and one object through S3, end to end.

It proves what ``framebus up`` promised: the broker takes and returns a record with
CloudEvents headers, the bucket stores an object and serves it by presigned URL, and
ffmpeg is installed. Each check raises with what failed; none of them hangs.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass

import httpx
from kafka import TopicPartition

from framebus.schemas.codec import Envelope, decode, encode
from framebus.schemas.topics import BY_NAME
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common import storage
from framebus.services.common.errors import FramebusError
from framebus.services.common.ffmpeg import require_ffmpeg
from framebus.services.common.settings import Settings

SMOKE_TOPIC = BY_NAME["framebus.smoke"]


class SmokeCheckError(FramebusError):
    """A smoke check did not see what it sent."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    detail: str
    seconds: float


def check_kafka(settings: Settings, *, timeout_s: float = 30.0) -> CheckResult:
    started = time.monotonic()
    admin = kafka_adapter.admin_client(settings.bootstrap_servers)
    try:
        kafka_adapter.ensure_topics(admin, [SMOKE_TOPIC], prefix=settings.topic_prefix)
    finally:
        admin.close()
    topic = settings.topic(SMOKE_TOPIC.name)
    sent = Envelope(type="framebus.smoke.checked", source="/framebus/demo", subject="smoke",
                    data={"check": str(uuid.uuid4())})
    record = encode(sent, key="smoke")
    producer = kafka_adapter.producer(settings.bootstrap_servers)
    try:
        metadata = producer.send(topic, key=record.key, value=record.value, headers=record.headers).get(timeout_s)
    finally:
        producer.close(timeout=5)
    consumer = kafka_adapter.consumer(settings.bootstrap_servers, group_id=None, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        partition = TopicPartition(topic, metadata.partition)
        consumer.assign([partition])
        consumer.seek(partition, metadata.offset)
        message = next(iter(consumer), None)
    finally:
        consumer.close()
    if message is None:
        raise SmokeCheckError(f"the record written to {topic} at offset {metadata.offset} was not read back in {timeout_s:g}s")
    received = decode(message.headers, message.value)
    if (received.id, received.data) != (sent.id, sent.data):
        raise SmokeCheckError(f"read back a different event from {topic}: {received.id} instead of {sent.id}")
    return CheckResult("Kafka", f"CloudEvent {sent.id[:8]} round-tripped via {topic}[{metadata.partition}]@{metadata.offset}",
                       time.monotonic() - started)


def check_s3(settings: Settings) -> CheckResult:
    started = time.monotonic()
    client = storage.s3_client(settings)
    storage.ensure_bucket(client, settings.s3_bucket)
    key = f"smoke/{uuid.uuid4()}.txt"
    body = f"framebus smoke check {key}\n".encode()
    storage.upload(client, io.BytesIO(body), settings.s3_bucket, key, content_type="text/plain")
    url = storage.presigned_get(client, settings.s3_bucket, key, expires_s=300)
    response = httpx.get(url, timeout=15)
    if response.status_code != 200 or response.content != body:
        raise SmokeCheckError(f"presigned GET of s3://{settings.s3_bucket}/{key} answered {response.status_code}")
    client.delete_object(Bucket=settings.s3_bucket, Key=key)
    return CheckResult("S3", f"put, presigned GET (HTTP {response.status_code}) and delete of s3://{settings.s3_bucket}/{key}",
                       time.monotonic() - started)


def check_ffmpeg() -> CheckResult:
    started = time.monotonic()
    tools = require_ffmpeg()
    return CheckResult("ffmpeg", tools.version, time.monotonic() - started)


def run_smoke(settings: Settings) -> list[CheckResult]:
    return [check_kafka(settings), check_s3(settings), check_ffmpeg()]
