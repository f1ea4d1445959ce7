"""Committing a processed batch on the real broker, when a rebalance moved some of its partitions."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition

from framebus.services.common.streams import commit_processed


async def _commit_with_one_partition_gone(bootstrap: str, topic: str) -> dict[int, int | None]:
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        kept, moved = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([kept])  # partition 1 was taken by a rebalance while its batch was processed
        await commit_processed(consumer, {kept: 7, moved: 5}, "test")  # must not raise
        return {tp.partition: await consumer.committed(tp) for tp in (kept, moved)}
    finally:
        await consumer.stop()


def test_a_batch_commits_the_partitions_still_owned_and_leaves_moved_ones_to_their_new_owner(
        kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("commits", partitions=2)
    assert asyncio.run(_commit_with_one_partition_gone(kafka_bootstrap, topic)) == {0: 7, 1: None}
