"""What a webhook receiver gets: bodies that match the published JSON Schemas, and verify() that
accepts exactly the genuine ones, typed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from framebus.schemas.export import SCHEMA_DIR
from framebus.services.batch.core import BatchCounts
from framebus.services.notifier.core import delivery_for, delivery_for_batch, signed_headers
from framebus.webhooks import WebhookVerificationError, verify
from tests.services.metering.test_core import completed, failed, request

SECRET, OTHER = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
HOOK = "https://hooks.example.com/fb"


def now() -> datetime:  # when the test runs, not when the module was collected: verify allows 5 minutes
    return datetime.now(UTC)


def link(request_id: str) -> str:
    return f"https://framebus.example.com/v1/generations/{request_id}/video"


def deliveries():
    from framebus.schemas.events import BatchCompleted

    yield delivery_for(completed(request(1)).model_copy(update={"webhook_url": HOOK}), now(), link)
    yield delivery_for(failed(request(2)).model_copy(update={"webhook_url": HOOK}), now(), link)
    yield delivery_for_batch(BatchCompleted(
        batch_id="batch_0123456789abcdef0123", tenant_id="acme", counts=BatchCounts(total=2, completed=2),
        tokens=1.5, manifest_key="batches/b/manifest.jsonl", manifest_url="https://s3.example.com/m",
        webhook_url=HOOK), now())


@pytest.mark.parametrize("delivery", list(deliveries()), ids=lambda d: d.type)
def test_every_body_matches_its_published_json_schema(delivery) -> None:
    schema = json.loads((SCHEMA_DIR / f"webhook.{delivery.type}.schema.json").read_text())
    jsonschema.validate(json.loads(delivery.payload), schema)


def test_verify_returns_the_typed_payload_with_the_stable_video_link() -> None:
    delivery = next(deliveries())
    payload = verify(delivery.payload.encode(), signed_headers(delivery, (SECRET,), now()), SECRET)
    assert payload.type == "generation.completed"
    assert payload.data.video.stable_url == link(payload.data.request_id) and payload.data.tokens > 0


def test_verify_takes_any_of_the_secrets_while_rotating() -> None:
    delivery = next(deliveries())
    headers = signed_headers(delivery, (OTHER,), now())
    assert verify(delivery.payload, headers, [SECRET, OTHER]).data.request_id == delivery.request_id
    with pytest.raises(WebhookVerificationError):
        verify(delivery.payload, headers, SECRET)


@pytest.mark.parametrize("tamper", ["body", "stale", "headers"])
def test_verify_refuses_what_is_not_a_genuine_delivery(tamper: str) -> None:
    delivery = next(deliveries())
    at = now() - timedelta(minutes=10) if tamper == "stale" else now()
    headers = signed_headers(delivery, (SECRET,), at)
    body = delivery.payload.replace('"completed"', '"failed"', 1) if tamper == "body" else delivery.payload
    if tamper == "headers":
        del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, SECRET)
