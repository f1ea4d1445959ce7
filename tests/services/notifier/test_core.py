"""Notifier decisions: small signed payloads a standardwebhooks receiver accepts, the SSRF guard, retries."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from framebus.services.notifier.core import (
    DEFAULT_SCHEDULE_S,
    Delivered,
    GiveUp,
    Refused,
    RetryAt,
    RetryPolicy,
    check_destination,
    delivery_for,
    judge,
    signed_headers,
)
from tests.services.metering.test_core import completed, failed, request

NOW = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
OLD, NEW = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def test_a_completed_result_becomes_a_small_payload_linking_the_video():
    result = completed(request(1, webhook_url="https://hooks.example.com/fb")).model_copy(
        update={"webhook_url": "https://hooks.example.com/fb"})
    delivery = delivery_for(result, NOW)
    body = json.loads(delivery.payload)
    assert body["type"] == "generation.completed" and delivery.type == "generation.completed"
    assert body["data"]["video"]["url"] == result.output.url and body["data"]["tokens"] == result.usage.tokens
    assert len(delivery.payload) < 2000, "the video is linked, never embedded"
    again = delivery_for(result, NOW + timedelta(hours=1))
    assert again.delivery_id == delivery.delivery_id, "webhook-id is stable across retries and replays"


def test_no_webhook_url_means_no_delivery():
    assert delivery_for(failed(request(2)), NOW) is None


def test_signatures_verify_with_the_standardwebhooks_library_for_every_rotated_secret():
    result = failed(request(3)).model_copy(update={"webhook_url": "https://hooks.example.com/fb"})
    delivery = delivery_for(result, NOW)
    now = datetime.now(UTC)
    headers = signed_headers(delivery, (NEW, OLD), now)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (NEW, OLD):  # a receiver still on the old secret, and one already on the new
        verified = Webhook(secret).verify(delivery.payload, headers)
        assert verified["data"]["error"]["code"] == "encode_failed"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(delivery.payload, headers)


def test_no_secret_is_refused_with_the_fix():
    delivery = delivery_for(failed(request(3)).model_copy(update={"webhook_url": "https://x.example/h"}), NOW)
    with pytest.raises(Refused, match="framebus webhooks secret"):
        signed_headers(delivery, (), NOW)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "::1", "fd00::1", "0.0.0.0", "::ffff:127.0.0.1", "100.64.0.1"])
def test_the_ssrf_guard_refuses_non_public_addresses(address):
    with pytest.raises(Refused, match="non-public"):
        check_destination("https://innocent.example.com/hook", frozenset(), lambda host: [address])


def test_the_ssrf_guard_checks_every_resolved_address_and_honours_the_allowlist():
    with pytest.raises(Refused):
        check_destination("https://a.example.com/h", frozenset(), lambda host: ["93.184.216.34", "10.0.0.1"])
    check_destination("https://a.example.com/h", frozenset(), lambda host: ["93.184.216.34"])
    check_destination("http://127.0.0.1:8080/h", frozenset({"127.0.0.1"}), lambda host: ["127.0.0.1"])


def test_only_2xx_delivers_and_410_disables():
    rng = random.Random(1)
    assert isinstance(judge(204, None, None, 1, RetryPolicy(), NOW, rng), Delivered)
    gone = judge(410, None, None, 1, RetryPolicy(), NOW, rng)
    assert isinstance(gone, GiveUp) and gone.disable_endpoint
    for status in (301, 400, 429, 500, None):
        assert isinstance(judge(status, "timeout" if status is None else None, None, 1, RetryPolicy(), NOW, rng),
                          RetryAt)


def test_retries_follow_the_schedule_with_jitter_then_give_up():
    policy, rng = RetryPolicy(), random.Random(7)
    for attempts, base in enumerate(DEFAULT_SCHEDULE_S, start=1):
        outcome = judge(500, None, None, attempts, policy, NOW, rng)
        delay = (outcome.due_at - NOW).total_seconds()
        assert base * 0.8 <= delay <= base * 1.2
    spent = judge(500, None, None, len(DEFAULT_SCHEDULE_S) + 1, policy, NOW, rng)
    assert isinstance(spent, GiveUp) and "10 attempts" in spent.reason


def test_retry_after_is_honoured_in_seconds_or_as_a_date():
    rng = random.Random(3)
    later = judge(503, None, "120", 1, RetryPolicy(), NOW, rng)
    assert (later.due_at - NOW).total_seconds() == 120
    dated = judge(429, None, "Sun, 22 Nov 2026 18:10:00 GMT", 1, RetryPolicy(), NOW, rng)
    assert (dated.due_at - NOW).total_seconds() == 600


def test_notified_subjects_are_forgotten_after_the_window_unless_still_pending() -> None:
    from framebus.services.notifier.core import Notified, subject_of

    notified = Notified(window_s=60.0)
    old, pending, fresh = (subject_of("acme", f"r-{n}", f"msg_{n}") for n in range(3))
    notified.add(old, at=0.0)
    notified.add(pending, at=1.0)
    notified.add(fresh, at=50.0)
    notified.expire(now=100.0, keep={pending})
    assert old not in notified and pending in notified and fresh in notified
    assert subject_of("acme", None, "msg_b1") == "delivery:msg_b1", "a batch webhook is its own subject"
    assert subject_of("acme", "r-1", "msg_x") == subject_of("acme", "r-1", "msg_y"), "one webhook per request"
