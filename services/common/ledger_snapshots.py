"""Snapshots of the ledger fold, so that no reader of framebus.ledger starts from its beginning.

framebus.ledger is never compacted or expired (it is the system of record for money), so a
fold from its beginning grows with every request ever made. framebus.ledger.snapshots holds,
per ledger partition, the fold of that partition up to an offset (a ``LedgerSnapshot``): a
reader (the scheduler, metering, `framebus balance`) loads the latest snapshot of each
partition and folds only the entries from its ``next_offset`` on.

Metering's ``LedgerCompactor`` writes them. It folds the ledger exactly as committed, with
a table of its own: the services' own folds also hold entries of transactions still open,
and a snapshot must never hold an entry that a transaction then aborts. Loading a snapshot
and folding the entries after it gives the same balances as folding everything (the fold
dedupes by request, and by entry id within the window), which tests check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.errors import CodecError
from framebus.schemas.events import LedgerSnapshot, TenantLedger
from framebus.services.common.compacted import TopicTable, read_all
from framebus.services.common.ledger import Balances, TenantBalance

log = logging.getLogger(__name__)
SNAPSHOTS_TOPIC = "framebus.ledger.snapshots"
SOURCE = "/framebus/metering/ledger-snapshots"


def to_event(partition: int, next_offset: int, tenants: dict[str, TenantBalance], window_s: float) -> LedgerSnapshot:
    return LedgerSnapshot(partition=partition, next_offset=next_offset, dedupe_window_s=window_s, tenants={
        tenant_id: TenantLedger(credited=held.credited, charged=held.charged, reservations=held.reservations,
                                settled=held.settled, entries=held.entries)
        for tenant_id, held in tenants.items()})


def tenants_of(snapshot: LedgerSnapshot) -> dict[str, TenantBalance]:
    return {tenant_id: TenantBalance(credited=held.credited, charged=held.charged,
                                     reserved=sum(held.reservations.values(), start=TenantBalance().reserved),
                                     reservations=dict(held.reservations), settled=dict(held.settled),
                                     entries=dict(held.entries))
            for tenant_id, held in snapshot.tenants.items()}


def latest(bootstrap: str, topic: str) -> dict[int, LedgerSnapshot]:
    """The latest snapshot of each ledger partition (none for a partition never snapshotted)."""
    found: dict[int, LedgerSnapshot] = {}
    for record in read_all(bootstrap, topic, timeout_s=60).values():
        try:
            snapshot = decode_event(record.headers, record.value).event
        except CodecError as exc:  # a bad snapshot costs a longer read, never a wrong balance
            log.warning("skipped an unreadable ledger snapshot: %s", exc)
            continue
        if isinstance(snapshot, LedgerSnapshot):
            found[snapshot.partition] = snapshot
    return found


def load(balances: Balances, snapshots: dict[int, LedgerSnapshot]) -> dict[int, int]:
    """Load every snapshot into ``balances``; the ledger offsets to fold on from, per partition."""
    for snapshot in snapshots.values():
        balances.load(tenants_of(snapshot))
    return {partition: snapshot.next_offset for partition, snapshot in snapshots.items()}


async def restored_table(bootstrap: str, prefix: str, balances: Balances, apply) -> TopicTable:
    """A table of framebus.ledger that starts where the snapshots end, with ``balances`` loaded."""
    snapshots = await asyncio.to_thread(latest, bootstrap, f"{prefix}{SNAPSHOTS_TOPIC}")
    offsets = load(balances, snapshots)
    if snapshots:
        log.info("loaded ledger snapshots of %d partitions (%d tenants)", len(snapshots),
                 sum(len(s.tenants) for s in snapshots.values()))
    return TopicTable(bootstrap, f"{prefix}framebus.ledger", apply, offsets=offsets)


class LedgerCompactor:
    """Folds framebus.ledger as committed and writes each partition's snapshot every interval
    (only partitions with new entries since their last one)."""

    def __init__(self, bootstrap: str, prefix: str, producer, *, window_s: float, interval_s: float,
                 clock=time.time) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        self.producer = producer
        self.window_s, self.interval_s = window_s, interval_s
        self.clock = clock
        self.balances = Balances()
        self.table: TopicTable | None = None
        self._tenants_by_partition: dict[int, set[str]] = defaultdict(set)
        self._written: dict[int, int] = {}  # partition -> next_offset of its latest snapshot
        self.snapshots_written = 0

    def apply(self, record) -> None:
        entry = decode_event(record.headers, record.value).event
        self._tenants_by_partition[record.partition].add(entry.tenant_id)  # type: ignore[attr-defined]
        self.balances.apply(entry)  # type: ignore[arg-type]

    async def start(self) -> None:
        snapshots = await asyncio.to_thread(latest, self.bootstrap, f"{self.prefix}{SNAPSHOTS_TOPIC}")
        self._written = load(self.balances, snapshots)
        for partition, snapshot in snapshots.items():
            self._tenants_by_partition[partition].update(snapshot.tenants)
        table = TopicTable(self.bootstrap, f"{self.prefix}framebus.ledger", self.apply, offsets=self._written)
        try:
            await table.start(catch_up_timeout_s=300)
        except BaseException:
            await table.stop()
            self.balances, self._tenants_by_partition = Balances(), defaultdict(set)  # the next try starts clean
            raise
        self.table = table

    async def run(self) -> None:
        """Snapshot every ``interval_s`` until cancelled (a task of metering's runtime). A round
        that fails is logged and tried again: snapshots shorten start-up, settling never waits on them."""
        await self.producer.start()
        try:
            while True:
                try:
                    if self.table is None:
                        await self.start()
                    await self.snapshot_now()
                except Exception as exc:  # noqa: BLE001 - see the docstring
                    log.warning("ledger snapshot failed; next try in %.0f s: %r", self.interval_s, exc)
                await asyncio.sleep(self.interval_s)
        finally:
            await self.producer.stop()

    async def snapshot_now(self) -> int:
        """Write the snapshot of every partition folded further than its last one; how many."""
        assert self.table is not None
        self.balances.forget_before(self.clock() - self.window_s)
        written = 0
        for partition, next_offset in sorted(self.table.applied_offsets().items()):
            if next_offset <= self._written.get(partition, 0):
                continue
            snapshot = to_event(partition, next_offset, self.balances.snapshot(self._tenants_by_partition[partition]),
                                self.window_s)
            record = encode_event(snapshot, source=SOURCE)
            await self.producer.send_and_wait(f"{self.prefix}{SNAPSHOTS_TOPIC}", key=record.key, value=record.value,
                                              headers=record.headers)
            self._written[partition] = next_offset
            written += 1
        self.snapshots_written += written
        return written


async def snapshot_once(bootstrap: str, prefix: str, *, window_s: float) -> int:
    """Fold the ledger to its end and snapshot every partition, once (a bench, a test); how many."""
    from framebus.services.common.kafka import snapshot_producer

    compactor = LedgerCompactor(bootstrap, prefix, snapshot_producer(bootstrap), window_s=window_s, interval_s=60)
    await compactor.producer.start()
    try:
        await compactor.start()
        return await compactor.snapshot_now()
    finally:
        if compactor.table is not None:
            await compactor.table.stop()
        await compactor.producer.stop()
