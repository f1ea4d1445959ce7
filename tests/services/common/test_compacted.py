"""Topic tables on the real broker: catch up from the beginning, or follow only what comes next."""

from __future__ import annotations

import asyncio

from kafka import KafkaProducer

from framebus.services.common.compacted import TopicTable


def _send(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, value in enumerate(values):
        producer.send(topic, key=f"k{i}".encode(), value=value)
    producer.flush(10)
    producer.close()


async def _follow(bootstrap: str, topic: str, *, from_end: bool, later: tuple[bytes, ...]) -> tuple[list[bytes], int]:
    seen: list[bytes] = []

    def apply(record) -> None:
        if record.value == b"not json":
            raise ValueError("unreadable")
        seen.append(record.value)

    table = TopicTable(bootstrap, topic, apply, from_end=from_end)
    await table.start(catch_up_timeout_s=30)
    try:
        await asyncio.to_thread(_send, bootstrap, topic, *later)
        for _ in range(100):
            if len(seen) + table.skipped >= (0 if from_end else 2) + len(later):
                break
            await asyncio.sleep(0.05)
        return seen, table.skipped
    finally:
        await table.stop()


def test_a_table_catches_up_from_the_beginning_and_skips_bad_records(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("table", partitions=2)
    _send(kafka_bootstrap, topic, b"old-1", b"old-2")
    seen, skipped = asyncio.run(_follow(kafka_bootstrap, topic, from_end=False, later=(b"new-1", b"not json", b"new-2")))
    assert sorted(seen) == [b"new-1", b"new-2", b"old-1", b"old-2"] and skipped == 1


def test_a_live_feed_sees_only_records_written_after_it_started(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("feed", partitions=2)
    _send(kafka_bootstrap, topic, b"stale-1", b"stale-2")
    seen, _ = asyncio.run(_follow(kafka_bootstrap, topic, from_end=True, later=(b"live-1", b"live-2")))
    assert sorted(seen) == [b"live-1", b"live-2"]
