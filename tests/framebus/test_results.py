"""The order a generation's stream keeps, and the HTTP transport's rules, without a server."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from framebus.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from framebus.http import backoff_s, error_for, generation_body
from framebus.results import GenerationStatus, Progress, StreamOrder
from framebus.schemas.events import Timings
from framebus.schemas.state import RequestState, Tier

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def status(state: RequestState) -> GenerationStatus:
    return GenerationStatus(request_id="r1", state=state, terminal=state.is_terminal, tier=Tier.STANDARD,
                            updated_at=NOW, timings=Timings())


def progress(step: int) -> Progress:
    return Progress(request_id="r1", stage="denoising", step=step, steps=20, at=NOW)


def test_the_stream_never_goes_backwards_and_ends_with_the_terminal_state() -> None:
    order = StreamOrder()
    arriving = [status(RequestState.QUEUED), status(RequestState.ACCEPTED), status(RequestState.RUNNING),
                progress(1), progress(1), status(RequestState.DISPATCHED), progress(20),
                status(RequestState.COMPLETED), status(RequestState.FAILED), progress(20)]
    shown = [(item.kind, getattr(item.data, "state", None) or item.data.step)
             for update in arriving if (item := order.admit(update)) is not None]
    assert shown == [("status", RequestState.QUEUED), ("status", RequestState.RUNNING), ("progress", 1),
                     ("progress", 20), ("completed", RequestState.COMPLETED)]
    assert order.finished


@pytest.mark.parametrize(("code", "body", "expected"), [
    (401, {"error": {"code": "unauthenticated", "message": "the API key is not valid"}}, AuthenticationError),
    (404, {"error": {"code": "not_found", "message": "no generation 'x'"}}, NotFoundError),
    (409, {"error": {"code": "already_finished", "message": "done"}}, ConflictError),
    (422, {"error": {"code": "invalid_request", "message": "width: bad", "fields": [{"field": "width"}]}},
     InvalidRequestError),
    (429, {"error": {"code": "rate_limited", "message": "slow down"}}, RateLimitedError),
    (503, {"error": {"code": "unavailable", "message": "Kafka"}}, UnavailableError),
])
def test_each_error_response_becomes_its_typed_exception(code: int, body: dict, expected: type) -> None:
    response = httpx.Response(code, json=body, headers={"Retry-After": "3"},
                              request=httpx.Request("GET", "http://gw/v1/generations/x"))
    error = error_for(response)
    assert type(error) is expected and str(error) == body["error"]["message"] and error.status_code == code
    if expected is InvalidRequestError:
        assert error.fields == [{"field": "width"}]
    if expected is RateLimitedError:
        assert error.retry_after_s == 3.0


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_s(attempt, None, rng) for attempt in range(1, 6)]
    assert all(0.25 * 2 ** (n - 1) <= d <= 0.5 * 2 ** (n - 1) for n, d in enumerate(delays, 1)), delays
    hinted = httpx.Response(429, headers={"Retry-After": "7"})
    assert backoff_s(1, hinted, rng) == 7.0


def test_a_submission_always_carries_an_id_so_a_retry_is_the_same_request() -> None:
    body = generation_body({"prompt": "x", "tenant_id": "ignored", "seed": None})
    assert body["request_id"].startswith("sdk-") and "tenant_id" not in body and "seed" not in body
    assert generation_body({"prompt": "x", "request_id": "mine"})["request_id"] == "mine"
