"""Thin Kafka adapter: admin (topics) and producer/consumer factories, kafka-python for
scripts and tools, aiokafka for the long-running services."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from framebus.errors import KafkaAdapterError
from framebus.kafka import consumer, producer
from framebus.schemas.topics import TopicSpec

__all__ = ["admin_client", "consumer", "ensure_topics", "group_consumer", "producer", "stream_producer"]
from framebus.services.common.settings import Settings


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool  # False: it existed already (left as it was)
    partitions: int


def admin_client(bootstrap: str, *, client_id: str = "framebus-admin") -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=15000,
                                bootstrap_timeout_ms=10000)
    except KafkaError as exc:
        raise KafkaAdapterError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def ensure_topics(admin: KafkaAdminClient, specs: Iterable[TopicSpec], *, prefix: str = "") -> list[TopicOutcome]:
    """Create each topic that is missing; leave existing ones untouched. Idempotent and race-safe."""
    specs = {prefix + spec.name: spec for spec in specs}
    request = {name: {"num_partitions": spec.partitions, "replication_factor": 1, "configs": spec.configs()}
               for name, spec in specs.items()}
    try:
        response = admin.create_topics(request, timeout_ms=30000, raise_errors=False, wait_for_metadata=True)
        described = admin.describe_topics(list(specs))
    except KafkaError as exc:
        raise KafkaAdapterError(f"creating topics failed: {exc}") from exc
    created = set()
    for result in response["topics"]:
        if result["error_code"] == 0:
            created.add(result["name"])
        elif result["error_code"] != TopicAlreadyExistsError.errno:
            raise KafkaAdapterError(f"creating topic {result['name']!r} failed: {result['error_message']}")
    partitions = {topic["name"]: len(topic["partitions"]) for topic in described}
    return [TopicOutcome(name, name in created, partitions.get(name, 0)) for name in specs]


def stream_producer(bootstrap: str, *, transactional_id: str | None = None) -> AIOKafkaProducer:
    """The producer of a stream processor (scheduler, metering): acks from all in-sync
    replicas, idempotent, and few large requests. The broker shares the cores, and with a
    16 KiB batch a full batch makes the next send wait a whole round trip (measured: the
    processors were latency-bound on it, not CPU-bound)."""
    # Transactional: the broker answers the next transaction's first request with
    # CONCURRENT_TRANSACTIONS while it still writes the previous one's markers; aiokafka retries
    # after retry_backoff_ms, whose 100 ms default put every batch 100-300 ms late (measured).
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                            max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024,
                            transactional_id=transactional_id, retry_backoff_ms=10 if transactional_id else 100)


def group_consumer(settings: Settings, *topics: str, group: str, **overrides) -> AIOKafkaConsumer:
    """A member of consumer group ``group`` (under the topic prefix) that commits only what its
    caller says is done. ``topics`` are full names."""
    config = {"bootstrap_servers": settings.bootstrap_servers, "group_id": f"{settings.topic_prefix}{group}",
              "enable_auto_commit": False, "auto_offset_reset": "earliest", "isolation_level": "read_committed",
              # A killed member's partitions move to the others after this.
              "session_timeout_ms": 10000, "heartbeat_interval_ms": 3000}
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)
