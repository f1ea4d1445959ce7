"""The faust app settings every framebus stream processor shares (scheduler, metering)."""

from __future__ import annotations

import faust

from services.common.settings import Settings


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
