"""Receiving framebus webhooks: check the signature, get the typed payload.

    from framebus.webhooks import verify

    payload = verify(body, headers, secret)    # raises WebhookVerificationError when not ours
    if payload.type == "generation.completed":
        print(payload.data.request_id, payload.data.video.stable_url)

Signatures are Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
checked by the standardwebhooks library, which also refuses a timestamp more than five
minutes off (replays). ``webhook-id`` is the same on every retry of one delivery: dedupe on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as _SignatureError

from framebus.errors import FramebusError
from framebus.schemas.webhooks import WebhookPayload

__all__ = ["WebhookPayload", "WebhookVerificationError", "verify"]

_PAYLOAD = TypeAdapter(Annotated[WebhookPayload, Field(discriminator="type")])


class WebhookVerificationError(FramebusError):
    """Not a delivery from this framebus: bad or missing signature headers, a stale timestamp,
    or a body that is not a framebus webhook. Answer 400 and drop it."""


def verify(body: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str]) -> WebhookPayload:
    """The payload of a genuine delivery. ``secret``: the tenant's signing secret (whsec_...), or
    several while rotating (any one may match)."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    headers = dict(headers)
    for candidate in secrets:
        try:
            Webhook(candidate).verify(body, headers, json_parse=False)
            break
        except _SignatureError:
            continue
    else:
        raise WebhookVerificationError("the webhook signature does not match (or its headers are missing or stale)")
    try:
        return _PAYLOAD.validate_json(body)
    except ValidationError as exc:
        raise WebhookVerificationError(f"the body is not a framebus webhook: {exc.error_count()} problems") from exc
