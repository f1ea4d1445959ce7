"""Balances fold exactly once per entry; admission names its reason."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from framebus.schemas.events import LedgerCharged, LedgerCredited, LedgerReleased, LedgerReserved, TenantUpdated
from framebus.schemas.state import ErrorCode
from framebus.services.common.ledger import Balances
from framebus.services.scheduler.admission import Admit, DedupeIndex, Duplicate, Refuse, decide
from framebus.services.scheduler.config import SchedulerConfig, TierPolicy
from tests.services.scheduler.helpers import req


def test_reserve_then_charge_moves_tokens_once_whatever_the_redeliveries() -> None:
    balances = Balances()
    entries = [LedgerCredited(tenant_id="acme", entry_id="c1", tokens=10),
               LedgerReserved(tenant_id="acme", entry_id="r1", request_id="x", tokens=4),
               LedgerCharged(tenant_id="acme", entry_id="h1", request_id="x", tokens=4)]
    for entry in entries + entries:
        balances.apply(entry)
    balance = balances.of("acme")
    assert (balance.credited, balance.reserved, balance.charged, balance.available()) == (10, 0, 4, 6)
    # A release after the charge (or a second settlement under another id) changes nothing.
    balances.apply(LedgerReleased(tenant_id="acme", entry_id="other-id", request_id="x", tokens=4))
    assert balances.of("acme").available() == 6


def test_settlement_before_its_reservation_arrives_still_settles_once() -> None:
    balances = Balances()
    balances.apply(LedgerReleased(tenant_id="acme", entry_id="rel", request_id="x", tokens=4))
    balances.apply(LedgerReserved(tenant_id="acme", entry_id="res", request_id="x", tokens=4))
    assert balances.of("acme").reserved == 0


@given(st.lists(st.tuples(st.sampled_from(["reserve", "charge", "release", "credit"]), st.integers(0, 5),
                          st.integers(1, 50)), max_size=80))
def test_invariant_credits_plus_limit_cover_reserved_plus_charged(ops) -> None:
    balances, limit = Balances(), 25.0
    reserved_tokens: dict[str, float] = {}
    for n, (op, request, tokens) in enumerate(ops):
        rid = f"r{request}"
        if op == "credit":
            balances.apply(LedgerCredited(tenant_id="t1", entry_id=f"c{n}", tokens=tokens))
        elif op == "reserve" and rid not in reserved_tokens and balances.can_reserve("t1", tokens, limit):
            reserved_tokens[rid] = tokens
            balances.apply(LedgerReserved(tenant_id="t1", entry_id=f"res-{rid}", request_id=rid, tokens=tokens))
        elif op in ("charge", "release") and rid in reserved_tokens:
            model = LedgerCharged if op == "charge" else LedgerReleased
            balances.apply(model(tenant_id="t1", entry_id=f"{op}-{rid}", request_id=rid, tokens=reserved_tokens[rid]))
        balance = balances.of("t1")
        assert balance.credited + Decimal(repr(limit)) >= balance.reserved + balance.charged


def _decide(request, tenant=TenantUpdated(tenant_id="acme"), balance=100.0, queued=0, config=SchedulerConfig(),
            dedupe=None):
    balances = Balances()
    balances.apply(LedgerCredited(tenant_id="acme", entry_id="c", tokens=balance))
    return decide(request, tenant=tenant, balances=balances, dedupe=dedupe or DedupeIndex(60), queued_in_tier=queued,
                  config=config, now=0.0)


def test_admission_reasons() -> None:
    request = req()
    assert isinstance(_decide(request), Admit)
    assert _decide(request, tenant=None).code is ErrorCode.UNKNOWN_TENANT
    assert _decide(request, tenant=TenantUpdated(tenant_id="acme", disabled=True)).code is ErrorCode.UNKNOWN_TENANT
    tiny = SchedulerConfig(tiers={**SchedulerConfig().tiers, request.tier: TierPolicy(1, 0.1, 10, max_queued=5)})
    full = _decide(request, queued=5, config=tiny)
    assert isinstance(full, Refuse) and full.code is ErrorCode.QUEUE_FULL and "maximum of 5" in full.message
    poor = _decide(request, balance=0.001)
    assert poor.code is ErrorCode.INSUFFICIENT_BALANCE and "needs" in poor.message
    postpaid = _decide(request, balance=0.0, tenant=TenantUpdated(tenant_id="acme", credit_limit_tokens=1000))
    assert isinstance(postpaid, Admit)


def test_a_duplicate_within_the_window_is_dropped_and_after_it_is_new() -> None:
    dedupe = DedupeIndex(window_s=60)
    dedupe.remember("acme", "r1", now=0.0)
    assert isinstance(_decide(req(request_id="r1"), dedupe=dedupe), Duplicate)
    assert dedupe.seen("acme", "r1", now=59.0) and not dedupe.seen("acme", "r1", now=61.0)
    assert not dedupe.seen("globex", "r1", now=1.0)
