"""Ledger snapshots on the real broker: balances loaded from the latest snapshot of each
partition plus the entries after it equal the fold of the whole ledger, and a balance query
then reads only the tail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from framebus.kafka import producer
from framebus.schemas.codec import encode_event
from framebus.schemas.events import LedgerCharged, LedgerCredited, LedgerReleased, LedgerReserved
from framebus.services.common import ledger_snapshots
from framebus.services.common.ledger import Balances, charge_id, release_id, reserve_id
from framebus.services.metering import queries

TENANTS = ("acme", "globex", "initech")


def history(n: int, first: int = 0) -> list:
    now = datetime.now(UTC)
    made: list = []
    for i in range(first, first + n):
        tenant = TENANTS[i % len(TENANTS)]
        request = f"r{i}"
        made.append(LedgerReserved(tenant_id=tenant, entry_id=reserve_id(tenant, request), request_id=request,
                                   tokens=1.5, at=now))
        if i % 7 == 0:
            continue  # left open: a reservation the snapshot must carry
        if i % 5 == 0:
            made.append(LedgerReleased(tenant_id=tenant, entry_id=release_id(tenant, request), request_id=request,
                                       tokens=1.5, at=now))
        else:
            made.append(LedgerCharged(tenant_id=tenant, entry_id=charge_id(tenant, request), request_id=request,
                                      tokens=1.25, at=now))
    return made


def publish(settings, entries) -> None:
    sender = producer(settings.bootstrap_servers)
    for entry in entries:
        record = encode_event(entry, source="/tests", event_id=entry.entry_id)
        sender.send(settings.topic("framebus.ledger"), key=record.key, value=record.value, headers=record.headers)
    sender.flush(timeout=30)
    sender.close()


def whole_fold(settings) -> Balances:
    folded = Balances()
    for entry in queries.ledger_entries(settings):
        folded.apply(entry)
    return folded


def test_a_snapshot_plus_the_tail_equals_the_whole_ledger(provisioned_settings) -> None:
    settings = provisioned_settings
    credits = [LedgerCredited(tenant_id=t, entry_id=f"credit-{t}", tokens=1000) for t in TENANTS]
    publish(settings, credits + history(300))

    written = asyncio.run(ledger_snapshots.snapshot_once(settings.bootstrap_servers, settings.topic_prefix,
                                                         window_s=3600))
    snapshots = ledger_snapshots.latest(settings.bootstrap_servers, settings.topic(ledger_snapshots.SNAPSHOTS_TOPIC))
    assert written == len(snapshots) > 1, "one snapshot per ledger partition that holds entries"
    # After the snapshots: more requests, a late second settlement of one before them, a new credit.
    late = LedgerCharged(tenant_id="acme", entry_id=charge_id("acme", "r3"), request_id="r3", tokens=1.25)
    publish(settings, history(60, first=300) + [late, LedgerCredited(tenant_id="globex", entry_id="top-up", tokens=50)])

    restored, whole = queries.balances(settings), whole_fold(settings)
    for tenant in TENANTS:
        assert restored.of(tenant) == whole.of(tenant), tenant
    acme = restored.of("acme")
    assert acme.charged == Decimal("1.25") * sum(1 for i in range(0, 360, 3) if i % 7 and i % 5)
    assert restored.reserved_for("acme", "r0") == 1.5, "the open reservation came through the snapshot"
    tail = sum(1 for _ in queries.ledger_entries(
        settings, offsets={p: s.next_offset for p, s in snapshots.items()}))
    assert tail == len(history(60, first=300)) + 2, "a balance query reads only what follows the snapshots"


def test_a_report_reads_from_its_window_not_from_the_beginning(provisioned_settings) -> None:
    settings = provisioned_settings
    long_ago = datetime.now(UTC) - timedelta(days=90)
    old = [LedgerCharged(tenant_id="acme", entry_id=charge_id("acme", f"old{i}"), request_id=f"old{i}", tokens=1,
                         at=long_ago) for i in range(50)]
    sender = producer(settings.bootstrap_servers)
    for entry in old:  # written with their own time, as a ledger written 90 days ago would be
        record = encode_event(entry, source="/tests", event_id=entry.entry_id)
        sender.send(settings.topic("framebus.ledger"), key=record.key, value=record.value, headers=record.headers,
                    timestamp_ms=int(long_ago.timestamp() * 1000))
    sender.flush(timeout=30)
    sender.close()
    publish(settings, history(9))
    since = datetime.now(UTC) - timedelta(days=1)
    read = list(queries.ledger_entries(settings, "acme", since=since))
    assert all(entry.at > long_ago + timedelta(days=1) for entry in read) and len(read) == 5
    report = queries.usage_report(settings, tenant_id="acme", start=since, end=datetime.now(UTC) + timedelta(hours=1),
                                  group_by="tier")
    total = report.total()
    assert (total.completed, total.tokens) == (2, Decimal("2.5")), "r3 and r6 of today; none of the 50 of 90 days ago"
