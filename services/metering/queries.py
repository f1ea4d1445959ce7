"""Reading the ledger for reports and balances: a Kafka adapter, nothing decided here.

A tenant's entries all sit in one partition (the ledger is keyed by tenant), so a
tenant's report reads only that partition; an operator's report reads them all. Reads
stop at the end offsets taken when they start, and start no earlier than they must: a
report at the first entry written an hour before its window (entries carry the time they
were made, their records the time they were written: the hour covers the difference), a
balance at its partition's latest snapshot. Neither grows with the ledger's history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from kafka import TopicPartition

from framebus.kafka import reader
from framebus.schemas.codec import decode_event
from framebus.schemas.errors import CodecError
from framebus.services.common import ledger_snapshots
from framebus.services.common.compacted import partition_for
from framebus.services.common.errors import KafkaAdapterError
from framebus.services.common.ledger import Balances
from framebus.services.common.settings import Settings
from framebus.services.metering.report import CostModel, GroupBy, PriceBook, UsageReport

log = logging.getLogger(__name__)


SKEW = timedelta(hours=1)


def ledger_entries(settings: Settings, tenant_id: str | None = None, *, since: datetime | None = None,
                   offsets: dict[int, int] | None = None, timeout_s: float = 60.0) -> Iterator:
    """The ledger's entries (of one tenant), from ``since`` (record time, less SKEW) or from
    ``offsets`` per partition (else from the beginning), to the end offsets taken at the start."""
    topic = settings.topic("framebus.ledger")
    consumer = reader(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
                             bootstrap_timeout_ms=int(min(timeout_s, 30) * 1000), max_poll_records=5000)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise KafkaAdapterError(f"topic {topic} does not exist; run `framebus up` first")
        if tenant_id is not None:
            partitions = [partition_for(tenant_id.encode(), len(partitions))]
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        if since is not None:
            stamp = max(0, int((since - SKEW).timestamp() * 1000))
            for tp, found in consumer.offsets_for_times(dict.fromkeys(tps, stamp)).items():
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        for tp in tps:
            if offsets and tp.partition in offsets:
                consumer.seek(tp, min(offsets[tp.partition], ends[tp]))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise KafkaAdapterError(f"reading {topic} took longer than {timeout_s:g} s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if tenant_id is not None and record.key != tenant_id.encode():
                        continue
                    try:
                        yield decode_event(record.headers, record.value).event
                    except CodecError as exc:
                        log.warning("skipped an unreadable ledger entry at offset %s: %s", record.offset, exc)
    finally:
        consumer.close()


def usage_report(settings: Settings, *, tenant_id: str | None = None, start: datetime | None = None,
                 end: datetime | None = None, group_by: GroupBy | None = None) -> UsageReport:
    report = UsageReport(PriceBook.from_settings(settings), CostModel.from_settings(settings), tenant_id=tenant_id,
                         start=start, end=end, group_by=group_by)
    return report.fold(ledger_entries(settings, tenant_id, since=start))


def balances(settings: Settings, tenant_id: str | None = None) -> Balances:
    """Balances as the scheduler folds them: the latest snapshots, then the entries after them."""
    folded = Balances()
    snapshots = ledger_snapshots.latest(settings.bootstrap_servers, settings.topic(ledger_snapshots.SNAPSHOTS_TOPIC))
    offsets = ledger_snapshots.load(folded, snapshots)
    for entry in ledger_entries(settings, tenant_id, offsets=offsets):
        folded.apply(entry)
    return folded
