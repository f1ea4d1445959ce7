"""A topic table over a recent window (``since_s``) on the real broker: history older than the
window is never read at start, what is inside it is, and later records are followed as usual."""

from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaProducer

from framebus.services.common.compacted import TopicTable

DAY_S = 86400


def _send(bootstrap: str, topic: str, records: list[tuple[int, bytes, float]]) -> None:
    """(partition, value, age in seconds): each record stamped that long ago (its Kafka timestamp)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    now_ms = int(time.time() * 1000)
    for i, (partition, value, age_s) in enumerate(records):
        producer.send(topic, key=f"k{i}".encode(), value=value, partition=partition,
                      timestamp_ms=now_ms - int(age_s * 1000))
    producer.flush(10)
    producer.close()


async def _window(bootstrap: str, topic: str, since_s: float, later: list[tuple[int, bytes, float]],
                  expect_later: int) -> tuple[list[bytes], list[bytes]]:
    """What the table held once caught up, and what it held after ``later`` was written."""
    seen: list[bytes] = []
    table = TopicTable(bootstrap, topic, lambda record: seen.append(record.value), since_s=since_s)
    await table.start(catch_up_timeout_s=30)
    try:
        at_start = list(seen)
        await asyncio.to_thread(_send, bootstrap, topic, later)
        deadline = time.monotonic() + 15
        while len(seen) < len(at_start) + expect_later and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything more would show now
        return at_start, seen
    finally:
        await table.stop()


def test_a_window_reads_only_records_stamped_inside_it_then_follows_what_comes(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("window", partitions=3, retention_ms=-1)  # the broker keeps the old records
    # Partition 0: old then new; partition 1: only old (starts at its end); partition 2: only new.
    _send(kafka_bootstrap, topic, [(0, b"old-0a", 40 * DAY_S), (0, b"old-0b", 31 * DAY_S), (0, b"new-0", 29 * DAY_S),
                                   (1, b"old-1", 45 * DAY_S), (2, b"new-2a", 3600), (2, b"new-2b", 0)])
    at_start, seen = asyncio.run(_window(kafka_bootstrap, topic, 30 * DAY_S,
                                         [(1, b"later-1", 0), (0, b"later-0", 0)], expect_later=2))
    assert sorted(at_start) == [b"new-0", b"new-2a", b"new-2b"], "caught up with exactly the window"
    assert sorted(seen) == [b"later-0", b"later-1", b"new-0", b"new-2a", b"new-2b"]


def test_a_topic_with_nothing_inside_the_window_is_caught_up_at_once(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("stale", partitions=2, retention_ms=-1)
    _send(kafka_bootstrap, topic, [(0, b"old-0", 10 * DAY_S), (1, b"old-1", 9 * DAY_S)])
    started = time.monotonic()
    at_start, seen = asyncio.run(_window(kafka_bootstrap, topic, DAY_S, [(0, b"later", 0)], expect_later=1))
    assert at_start == [] and seen == [b"later"]
    assert time.monotonic() - started < 20


def test_without_a_window_the_table_still_reads_from_the_beginning(kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("whole", partitions=1, retention_ms=-1)
    _send(kafka_bootstrap, topic, [(0, b"old", 40 * DAY_S), (0, b"new", 0)])

    async def read() -> list[bytes]:
        seen: list[bytes] = []
        table = TopicTable(kafka_bootstrap, topic, lambda record: seen.append(record.value))
        await table.start(catch_up_timeout_s=30)
        await table.stop()
        return seen

    assert asyncio.run(read()) == [b"old", b"new"]


@pytest.mark.parametrize("options", [{"since_s": 0}, {"since_s": -5}, {"since_s": 60, "from_end": True}])
def test_a_window_that_cannot_work_is_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        TopicTable("127.0.0.1:9", "t", lambda record: None, **options)


def test_a_table_from_offsets_starts_each_named_partition_there_and_the_others_at_the_beginning(
        kafka_bootstrap, topic_factory) -> None:
    topic = topic_factory("offsets", partitions=3, retention_ms=-1)
    _send(kafka_bootstrap, topic, [(0, b"p0-0", 0), (0, b"p0-1", 0), (0, b"p0-2", 0), (1, b"p1-0", 0),
                                   (1, b"p1-1", 0), (2, b"p2-0", 0)])

    async def read() -> tuple[list[bytes], list[bytes]]:
        seen: list[bytes] = []
        table = TopicTable(kafka_bootstrap, topic, lambda record: seen.append(record.value), offsets={0: 2, 1: 2})
        await table.start(catch_up_timeout_s=30)
        try:
            at_start = list(seen)
            await asyncio.to_thread(_send, kafka_bootstrap, topic, [(1, b"p1-later", 0)])
            deadline = time.monotonic() + 15
            while len(seen) < len(at_start) + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return at_start, seen
        finally:
            await table.stop()

    at_start, seen = asyncio.run(read())
    assert sorted(at_start) == [b"p0-2", b"p2-0"] and sorted(seen) == [b"p0-2", b"p1-later", b"p2-0"]


def test_offsets_and_another_start_cannot_be_combined() -> None:
    with pytest.raises(ValueError):
        TopicTable("127.0.0.1:9", "t", lambda record: None, offsets={0: 1}, since_s=60)
