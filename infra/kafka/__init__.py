"""Apache Kafka from Maven Central, run as a single KRaft node on loopback."""

from framebus.infra.kafka.broker import KAFKA_VERSION, KafkaBroker

__all__ = ["KAFKA_VERSION", "KafkaBroker"]
