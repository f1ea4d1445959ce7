"""Reading the ledger for reports and balances: a Kafka adapter, nothing decided here.

A tenant's entries all sit in one partition (the ledger is keyed by tenant), so a
tenant's report reads only that partition; an operator's report reads them all. Reads
stop at the end offsets taken when they start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime

from kafka import TopicPartition

from framebus.kafka import reader
from framebus.schemas.codec import decode_event
from framebus.schemas.errors import CodecError
from framebus.services.common.compacted import partition_for
from framebus.services.common.errors import KafkaAdapterError
from framebus.services.common.ledger import Balances
from framebus.services.common.settings import Settings
from framebus.services.metering.report import CostModel, GroupBy, PriceBook, UsageReport

log = logging.getLogger(__name__)


def ledger_entries(settings: Settings, tenant_id: str | None = None, *, timeout_s: float = 60.0) -> Iterator:
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
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
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
    return report.fold(ledger_entries(settings, tenant_id))


def balances(settings: Settings, tenant_id: str | None = None) -> Balances:
    folded = Balances()
    for entry in ledger_entries(settings, tenant_id):
        folded.apply(entry)
    return folded
