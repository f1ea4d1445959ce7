"""What every framebus stream processor shares (scheduler, metering): the faust app that
hosts it, and committing a processed batch of input."""

from __future__ import annotations

import logging

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from services.common.settings import Settings

log = logging.getLogger(__name__)


def stream_app(name: str, settings: Settings, **overrides) -> faust.App:
    """A faust app on raw records, in-memory state and our topics (declared by `framebus up`, never by faust)."""
    options = dict(
        broker=[f"kafka://{host}" for host in settings.bootstrap_servers.split(",")], store="memory://",
        web_enabled=False, producer_acks=-1, consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5, topic_partitions=6, topic_allow_declare=False,
        # A killed processor's group membership lapses after this; its successor waits that long.
        broker_session_timeout=10.0, broker_heartbeat_interval=3.0,
        producer_max_request_size=4 * 1024 * 1024,
        # Few, large produce requests: the broker shares these cores, and with faust's default
        # 16 KiB batch a full batch makes the next send wait a whole round trip (measured: the
        # scheduler and metering were latency-bound on it, not CPU-bound).
        producer_linger=0.005, producer_max_batch_size=1024 * 1024,
    )
    return faust.App(f"{settings.topic_prefix}{name}", **{**options, **overrides})


async def commit_processed(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], what: str) -> None:
    """Commit the next offsets of a processed batch, for the partitions this consumer still owns.

    A rebalance may take partitions while their batch is processed: their records are read
    again by the new owner, which drops them as already done (every output is idempotent).
    """
    owned = consumer.assignment()
    mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
    if len(mine) < len(offsets):
        log.warning("%s: %d partitions moved away before their batch was committed; their new owner reads it again",
                    what, len(offsets) - len(mine))
    if not mine:
        return
    try:
        await consumer.commit(mine)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("%s could not commit after a rebalance (the batch is read again): %s", what, exc)
