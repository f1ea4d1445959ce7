"""The gateway's pure decisions: API keys, the rate limiter, and the status fold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from framebus.schemas.events import StatusChanged
from framebus.schemas.state import RequestState
from framebus.services.gateway.keys import issue_key, parse_key, secret_matches
from framebus.services.gateway.ratelimit import RateLimiter, retry_after_header
from framebus.services.gateway.tables import StatusTable


def test_issued_key_verifies_and_only_its_hash_is_kept() -> None:
    issued = issue_key()
    key_id, secret = parse_key(issued.plaintext)
    assert key_id == issued.record.key_id and secret_matches(secret, issued.record)
    assert secret not in issued.record.model_dump_json()
    assert not secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), issued.record)
    assert not secret_matches(secret, issued.record.model_copy(update={"revoked": True}))


def test_malformed_keys_do_not_parse() -> None:
    assert parse_key("fb_short_x") is None and parse_key("Bearer fb_x") is None and parse_key("") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.try_acquire("acme", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire("acme", 3)
    assert 19.9 < wait <= 20.0 and retry_after_header(wait) == "20"
    assert limiter.try_acquire("globex", 3) == 0.0  # tenants do not share a bucket
    clock.now += 20.0
    assert limiter.try_acquire("acme", 3) == 0.0


@given(st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200))
def test_rate_limiter_never_admits_more_than_burst_plus_refill(gaps) -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    start, admitted = clock.now, 0
    for gap in gaps:
        clock.now += gap
        admitted += limiter.try_acquire("t", 60) == 0.0
    assert admitted <= 60 + (clock.now - start) * 1.0 + 1e-9


def _status(state: str) -> StatusChanged:
    return StatusChanged(request_id="r1", tenant_id="acme", state=state, tier="batch")


def test_a_late_accepted_record_never_hides_progress() -> None:
    table = StatusTable()
    for state in ("accepted", "queued", "running", "completed", "accepted", "running"):
        table.apply(_status(state))
    assert table.get("acme", "r1").state is RequestState.COMPLETED
    assert table.get("globex", "r1") is None
