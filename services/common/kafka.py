"""Thin Kafka adapter: admin (topics) and producer/consumer factories, kafka-python for
scripts and tools, aiokafka for the long-running services."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from framebus.errors import KafkaAdapterError
from framebus.kafka import consumer, producer, unreachable, watch_connection_failures
from framebus.schemas.topics import SNAPSHOT_MAX_BYTES, TopicSpec
from framebus.security import security_for

__all__ = ["admin_client", "consumer", "ensure_topics", "group_consumer", "producer", "stream_producer"]
from framebus.services.common.settings import Replication, Settings


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool  # False: it existed already (left as it was)
    partitions: int
    mismatches: tuple[str, ...] = ()  # how an existing topic differs from the catalogue (never changed here)


def admin_client(bootstrap: str, *, client_id: str = "framebus-admin") -> KafkaAdminClient:
    watch_connection_failures()
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=15000,
                                bootstrap_timeout_ms=10000, **security_for(bootstrap).kafka_python())
    except KafkaError as exc:
        raise unreachable(bootstrap, exc) from exc


def ensure_topics(admin: KafkaAdminClient, specs: Iterable[TopicSpec], *, prefix: str = "",
                  replication: Replication = Replication()) -> list[TopicOutcome]:
    """Create each topic that is missing; leave existing ones untouched, but say how each differs
    from the catalogue (partitions, replicas, cleanup policy, retention). Idempotent and race-safe."""
    specs = {prefix + spec.name: spec for spec in specs}
    try:
        brokers = len(admin.describe_cluster().get("brokers", ()))
    except KafkaError as exc:
        raise KafkaAdapterError(f"describing the cluster failed: {exc}") from exc
    if 0 < brokers < replication.factor:
        raise KafkaAdapterError(f"topics need {replication.factor} copies but the cluster has {brokers} broker(s): "
                                f"set FRAMEBUS_KAFKA_REPLICATION_FACTOR to at most {brokers}")
    request = {name: {"num_partitions": spec.partitions, "replication_factor": replication.factor,
                      "configs": {**spec.configs(), "min.insync.replicas": str(replication.min_insync)}}
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
    layout = {topic["name"]: (len(topic["partitions"]), min((len(p.get("replica_nodes", ()))
                                                             for p in topic["partitions"]), default=0))
              for topic in described}
    existing = [name for name in specs if name not in created]
    configs = _topic_configs(admin, existing) if existing else {}
    return [TopicOutcome(name, name in created, layout.get(name, (0, 0))[0],
                         () if name in created else mismatches(specs[name], layout.get(name, (0, 0)),
                                                               configs.get(name, {}), replication))
            for name in specs]


def _topic_configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
                                       config_filter="all")
    except KafkaError as exc:
        raise KafkaAdapterError(f"reading the configs of existing topics failed: {exc}") from exc
    topics = next(iter(found.values()), {}) if isinstance(found, dict) else {}
    return {name: {key: str(entry.get("value")) for key, entry in entries.items()} for name, entries in topics.items()}


def mismatches(spec: TopicSpec, layout: tuple[int, int], configs: dict[str, str],
               replication: Replication) -> tuple[str, ...]:
    """How an existing topic differs from what the catalogue would create, one line each."""
    partitions, replicas = layout
    found = []
    if partitions < spec.partitions:
        found.append(f"{partitions} partitions, the catalogue asks {spec.partitions} "
                     "(adding them moves keys between partitions: left as it is)")
    if replicas < replication.factor:
        found.append(f"replication factor {replicas}, settings ask {replication.factor}")
    wanted = spec.configs()
    for key in ("cleanup.policy", "retention.ms"):
        if key in configs and configs[key] != wanted[key]:
            found.append(f"{key}={configs[key]}, the catalogue asks {wanted[key]}")
    return tuple(found)


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
                            transactional_id=transactional_id, retry_backoff_ms=10 if transactional_id else 100,
                            **security_for(bootstrap).aiokafka())


def snapshot_producer(bootstrap: str) -> AIOKafkaProducer:
    """The producer of ledger snapshots: large single records (the dedupe window's settled
    requests), compressed; the snapshots topic allows records of this size."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                            max_request_size=SNAPSHOT_MAX_BYTES, **security_for(bootstrap).aiokafka())


def group_consumer(settings: Settings, *topics: str, group: str, **overrides) -> AIOKafkaConsumer:
    """A member of consumer group ``group`` (under the topic prefix) that commits only what its
    caller says is done. ``topics`` are full names."""
    config = {"bootstrap_servers": settings.bootstrap_servers, "group_id": f"{settings.topic_prefix}{group}",
              "enable_auto_commit": False, "auto_offset_reset": "earliest", "isolation_level": "read_committed",
              # A killed member's partitions move to the others after this.
              "session_timeout_ms": 10000, "heartbeat_interval_ms": 3000}
    config.update(overrides)
    return async_reader(*topics, **config)


def async_reader(*topics: str, bootstrap_servers: str, **config) -> AIOKafkaConsumer:
    """An aiokafka consumer with the cluster's security (every async consumer here is built by this)."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **config,
                            **security_for(bootstrap_servers).aiokafka())
