"""Kafka pieces of the processor runtime (``processor.py``): sending output in batches, and
committing a processed batch of input."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from framebus.schemas.codec import KafkaRecord
from framebus.services.common.compacted import partition_for

log = logging.getLogger(__name__)


def next_offsets(batches: dict[TopicPartition, list]) -> dict[TopicPartition, int]:
    """The offsets to commit once a ``getmany`` result has been processed."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items()}


def still_owned(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], what: str) -> dict[TopicPartition, int]:
    """The offsets of partitions this consumer still owns: only those may be committed."""
    owned = consumer.assignment()
    mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
    if len(mine) < len(offsets):
        log.warning("%s: %d partitions moved away before their batch was committed; their new owner reads it again",
                    what, len(offsets) - len(mine))
    return mine


async def commit_processed(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], what: str) -> None:
    """Commit the next offsets of a processed batch, for the partitions this consumer still owns.

    A rebalance may take partitions while their batch is processed: their records are read
    again by the new owner, which drops them as already done (every output is idempotent).
    """
    mine = still_owned(consumer, offsets, what)
    if not mine:
        return
    try:
        await consumer.commit(mine)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("%s could not commit after a rebalance (the batch is read again): %s", what, exc)


class BatchSender:
    """Sends many records as one produce batch per (topic, partition): one delivery future per
    batch instead of one per record, and the partition of a key computed once (the keys of
    usage and ledger records are tenants, a handful). Partitions match the Java client's
    default partitioner, like every other producer here."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, int] = {}
        self._partition_of: dict[tuple[bytes | None, int], int] = {}

    async def send(self, records: list[tuple[str, KafkaRecord]]) -> list[asyncio.Future]:
        """Hand ``records`` (topic, record) to the producer; returns the futures of their batches."""
        open_batches: dict[tuple[str, int], object] = {}
        futures = []
        for topic, record in records:
            partition = await self._partition(topic, record.key)
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[(topic, partition)] = self.producer.create_batch()
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))  # full
                batch = open_batches[(topic, partition)] = self.producer.create_batch()
                batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers)
        for (topic, partition), batch in open_batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _partition(self, topic: str, key: bytes | None) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(await self.producer.partitions_for(topic))
        if key is None:
            return 0
        cached = self._partition_of.get((key, count))
        if cached is None:
            if len(self._partition_of) > 100_000:  # keys are tenants in practice; stay bounded anyway
                self._partition_of.clear()
            cached = self._partition_of[(key, count)] = partition_for(key, count)
        return cached
