"""The ledger fold keeps sums forever but its dedupe memory only for the window, and a fold
loaded from a snapshot continues exactly as the fold it was taken from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from framebus.schemas.events import LedgerCharged, LedgerCredited, LedgerReleased, LedgerReserved
from framebus.services.common.ledger import Balances, charge_id, release_id, reserve_id

DAY = timedelta(days=1)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entries_of(request_id: str, at: datetime, *, charged: bool = True) -> list:
    reserve = LedgerReserved(tenant_id="acme", entry_id=reserve_id("acme", request_id), request_id=request_id,
                             tokens=2.5, at=at)
    settle = (LedgerCharged(tenant_id="acme", entry_id=charge_id("acme", request_id), request_id=request_id,
                            tokens=2.0, at=at + timedelta(seconds=30)) if charged else
              LedgerReleased(tenant_id="acme", entry_id=release_id("acme", request_id), request_id=request_id,
                             tokens=2.5, at=at + timedelta(seconds=30)))
    return [reserve, settle]


def test_dedupe_memory_is_bounded_by_the_window_and_sums_are_kept() -> None:
    balances = Balances()
    balances.apply(LedgerCredited(tenant_id="acme", entry_id="credit-1", tokens=10_000, at=T0))
    for day in range(30):
        for n in range(100):
            for entry in entries_of(f"d{day}-{n}", T0 + day * DAY):
                balances.apply(entry)
        balances.forget_before((T0 + day * DAY - 2 * DAY).timestamp())
    held = balances.of("acme")
    assert held.charged == Decimal("6000.0") and held.reserved == 0
    assert len(held.settled) == 300, "three days of requests (today, and the two-day window), not thirty"
    assert held.entries == {}, "the one credit was forgotten with its day; its sum stays"
    assert held.credited == Decimal(10_000)


def test_a_second_settlement_and_a_replayed_reservation_within_the_window_count_nothing() -> None:
    balances = Balances()
    reserve, charge = entries_of("r1", T0)
    for entry in (reserve, charge, reserve, charge):
        balances.apply(entry)
    release = LedgerReleased(tenant_id="acme", entry_id=release_id("acme", "r1"), request_id="r1", tokens=2.5, at=T0)
    assert balances.apply(release) is False
    held = balances.of("acme")
    assert (held.charged, held.reserved) == (Decimal("2.0"), Decimal(0))


def test_a_fold_loaded_from_a_snapshot_continues_exactly_as_the_original() -> None:
    history = [LedgerCredited(tenant_id="acme", entry_id="credit-1", tokens=500, at=T0)]
    for n in range(40):
        history += entries_of(f"r{n}", T0 + timedelta(minutes=n), charged=n % 3 != 0)
    open_reservation = entries_of("open", T0 + DAY)[0]
    tail = [open_reservation, *entries_of("r5", T0)]  # r5 again: a late duplicate after the snapshot
    tail += entries_of("after", T0 + DAY)
    original, snapshotted = Balances(), Balances()
    for entry in history:
        original.apply(entry)
        snapshotted.apply(entry)
    restored = Balances()
    restored.load(snapshotted.snapshot(["acme"]))
    for entry in tail:
        assert original.apply(entry) == restored.apply(entry)
    assert restored.of("acme") == original.of("acme")
    assert restored.reserved_for("acme", "open") == 2.5 and restored.is_settled("acme", "r5")
