"""Reading compacted topics as tables: one key's latest value, or all of them, kept current.

``TopicTable`` is how a gateway replica materializes framebus.status and
framebus.tenants: it reads every partition from the beginning (no consumer group, so
every replica sees everything), reports when it has caught up with the end offsets it
saw at start, then follows new records. Records that do not decode are counted and
skipped; the table never stops on a bad record.

With ``since_s`` it reads only a recent window instead of the beginning: each partition
from its first record stamped at or after ``now - since_s`` (the broker's time index, so
older history is never fetched), which keeps start-up bounded by the window however long
the topic's history is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from framebus.errors import KafkaAdapterError
from framebus.kafka import partition_for, partitions_of, read_all, read_latest, read_since
from framebus.services.common.kafka import async_reader

__all__ = ["TopicTable", "partition_for", "partitions_of", "read_all", "read_latest", "read_since"]

log = logging.getLogger(__name__)


class TopicTable:
    """Follows a compacted topic from the beginning and hands each record to ``apply``.

    ``from_end``: follow only records written after ``start`` (a live feed such as worker
    heartbeats, where history is stale by definition).
    ``since_s``: start each partition at its first record whose Kafka timestamp is at or after
    ``start``'s time minus ``since_s`` (a partition with none starts at its end); catching up
    still means reaching the end offsets seen at start. None: from the beginning.
    ``offsets``: start each partition named (by number) at that offset, the others at their
    beginning (a fold restored from a snapshot reads only what follows it).
    """

    def __init__(self, bootstrap: str, topic: str, apply: Callable[[object], None], *, from_end: bool = False,
                 since_s: float | None = None, offsets: Mapping[int, int] | None = None) -> None:
        if sum((from_end, since_s is not None, offsets is not None)) > 1:
            raise ValueError("a table starts from the end, from `since_s` ago or from `offsets`: one of them")
        if since_s is not None and since_s <= 0:
            raise ValueError(f"`since_s` must be positive, not {since_s!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.apply = apply
        self.from_end = from_end
        self.since_s = since_s
        self.offsets = dict(offsets) if offsets is not None else None
        self.caught_up = asyncio.Event()
        self.skipped = 0  # records ``apply`` could not use
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._applied_through: dict[TopicPartition, int] = {}  # positions whose records are all applied

    async def start(self, *, catch_up_timeout_s: float = 60.0) -> None:
        # aiokafka learns partitions only for assigned topics, so ask once with the sync client.
        partitions = await asyncio.to_thread(partitions_of, self.bootstrap, self.topic)
        # A topic created a moment ago may not be in a fresh client's metadata yet (seen on a new
        # broker: the scheduler crashed on "does not exist" right after `up` created it).
        deadline = time.monotonic() + 15.0
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            partitions = await asyncio.to_thread(partitions_of, self.bootstrap, self.topic)
        if not partitions:
            raise KafkaAdapterError(f"topic {self.topic} does not exist; run `framebus up` to create it")
        # A window's (or given) start offset may be deleted by retention before the first fetch: resume
        # at the earliest record then (still inside the window), never at the end.
        reset = {"auto_offset_reset": "earliest"} if self.since_s is not None or self.offsets is not None else {}
        self._consumer = async_reader(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          isolation_level="read_committed", **reset)
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        if self.from_end:
            await self._consumer.seek_to_end(*tps)
            ends = {tp: 0 for tp in tps}  # nothing to catch up with
        elif self.since_s is not None:
            ends = await self._seek_to_window(tps)
        elif self.offsets is not None:
            ends = await self._seek_to_offsets(tps)
        else:
            await self._consumer.seek_to_beginning(*tps)
            ends = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._follow(ends), name=f"table:{self.topic}")
        await asyncio.wait_for(self.caught_up.wait(), timeout=catch_up_timeout_s)

    async def _seek_to_window(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Seek each partition to its first record of the window; return the end offsets to catch up with.

        The ends are read first: a record written between the two lookups is then at or after a
        partition's start either way, so nothing is skipped."""
        assert self._consumer is not None and self.since_s is not None
        ends = await self._consumer.end_offsets(tps)
        since_ms = max(0, int((time.time() - self.since_s) * 1000))
        found = await self._consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends_to_reach = {}
        for tp in tps:
            start = found.get(tp)
            offset = ends[tp] if start is None else start.offset
            self._consumer.seek(tp, offset)
            # Only what lies between the window's start and the end seen now is history to catch up with.
            ends_to_reach[tp] = ends[tp] if offset < ends[tp] else 0
        return ends_to_reach

    async def _seek_to_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Seek each partition to its offset in ``offsets`` (else its beginning); return the end offsets to catch up with."""
        assert self._consumer is not None and self.offsets is not None
        # Explicit positions for every partition: one left to a lazy reset could be reset by the
        # fetcher's default instead (seen: a partition started at its end and skipped its records).
        firsts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        ends_to_reach = {}
        for tp in tps:
            offset = max(self.offsets.get(tp.partition, firsts[tp]), firsts[tp])
            self._consumer.seek(tp, offset)
            ends_to_reach[tp] = ends[tp] if offset < ends[tp] else 0
        return ends_to_reach

    async def _follow(self, ends: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        pending = {tp for tp, end in ends.items() if end > 0}
        if not pending:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self.apply(record)
                    except Exception:  # noqa: BLE001 - one bad record must not stop the table
                        self.skipped += 1
                        log.warning("skipped a record of %s at %s:%s", self.topic, tp.partition, record.offset,
                                    exc_info=True)
                    # Kept in step with ``apply`` (no await between them): a snapshot of what was applied
                    # (ledger_snapshots) taken at any await names exactly the offsets it holds.
                    self._applied_through[tp] = record.offset + 1
            for tp in self._consumer.assignment():
                self._applied_through[tp] = await self._consumer.position(tp)
            if pending:
                pending = {tp for tp in pending if self._applied_through[tp] < ends[tp]}
                if not pending:
                    self.caught_up.set()

    async def read_to_end(self, *, poll_s: float = 0.05) -> None:
        """Return once every record committed to the topic when called has been applied."""
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(list(self._consumer.assignment()))
        while any(self._applied_through.get(tp, -1) < end for tp, end in ends.items()):
            await asyncio.sleep(poll_s)

    def applied_offsets(self) -> dict[int, int]:
        """Per partition, the offset up to which every record has been applied."""
        return {tp.partition: offset for tp, offset in self._applied_through.items()}

    def heard_at(self) -> float:
        """Wall-clock time of the latest fetch the broker answered for this table (0: none yet)."""
        if self._consumer is None:
            return 0.0
        stamps = [self._consumer.last_poll_timestamp(tp) for tp in self._consumer.assignment()]
        return max((stamp for stamp in stamps if stamp is not None), default=0) / 1000

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()
