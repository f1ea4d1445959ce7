"""The notifier's decisions, pure: what to send, how to sign it, where it may go, and what
an answer means for the next attempt.

Standard Webhooks: ``webhook-id`` is stable across retries, ``webhook-timestamp`` is the
attempt's time, ``webhook-signature`` holds one ``v1,<base64 HMAC-SHA256>`` per secret
(several while a tenant rotates). Payloads stay small: the video is a presigned link.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from framebus.schemas.events import BatchCompleted, GenerationCancelled, GenerationCompleted, GenerationFailed
from framebus.schemas.webhooks import (
    RETRY_SCHEDULE_S,
    WEBHOOK_PAYLOADS,
    BatchCompletedWebhook,
    BatchWebhookData,
    GenerationWebhookData,
    WebhookDelivery,
    WebhookError,
    WebhookPayload,
    WebhookVideo,
)
from framebus.services.common.errors import FramebusError

DEFAULT_SCHEDULE_S = RETRY_SCHEDULE_S
Result = GenerationCompleted | GenerationFailed | GenerationCancelled


class Refused(FramebusError):
    """The URL may not be called (SSRF guard)."""


def delivery_id(tenant_id: str, subject: str, webhook_type: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}/{subject}/{webhook_type}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def subject_of(tenant_id: str, request_id: str | None, delivery_id: str) -> str:
    """What gets one webhook: a request (whatever its outcome), else the delivery itself (a batch)."""
    return f"request:{tenant_id}/{request_id}" if request_id else f"delivery:{delivery_id}"


class Notified:
    """Subjects that already have a webhook, for ``window_s``: a request's first terminal result
    gets the webhook; a second one (a superseded attempt's, landing late) gets none. Kept in
    memory, rebuilt at start from the pending deliveries and the window's attempts."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._since: dict[str, float] = {}  # subject -> when first notified (insertion order = time order)

    def __contains__(self, subject: str) -> bool:
        return subject in self._since

    def __len__(self) -> int:
        return len(self._since)

    def add(self, subject: str, at: float) -> None:
        self._since.setdefault(subject, at)

    def expire(self, now: float, keep: set[str]) -> None:
        """Forget subjects older than the window, except ``keep`` (deliveries still pending)."""
        for subject, at in list(self._since.items()):
            if now - at < self.window_s:
                break
            if subject not in keep:
                del self._since[subject]


def delivery_for(result: Result, now: datetime, video_link: Callable[[str], str] | None = None) -> WebhookDelivery | None:
    """The webhook a result asks for (None when its request named no webhook). ``video_link``
    gives the stable link to a request's video (``Settings.video_link``)."""
    if not result.webhook_url:
        return None
    data: dict = {"request_id": result.request_id, "tenant_id": result.tenant_id, "outcome": result.outcome,
                  "tier": result.tier.value, "model": result.model.value if result.model else None,
                  "batch_id": result.batch_id, "custom_id": result.custom_id, "metadata": result.metadata}
    if isinstance(result, GenerationCompleted):
        out = result.output
        data |= {"video": WebhookVideo(url=out.url, expires_at=out.url_expires_at, bucket=out.bucket, key=out.key,
                                       bytes=out.bytes, sha256=out.sha256, duration_s=out.duration_s,
                                       width=out.width, height=out.height,
                                       stable_url=video_link(result.request_id) if video_link else None),
                 "tokens": result.usage.tokens}
    elif isinstance(result, GenerationFailed):
        data |= {"error": WebhookError(code=str(result.error.code), message=result.error.message)}
    else:
        data |= {"reason": result.reason}
    payload = WEBHOOK_PAYLOADS[f"generation.{result.outcome}"](timestamp=now, data=GenerationWebhookData(**data))
    return WebhookDelivery(delivery_id=delivery_id(result.tenant_id, result.request_id, payload.type),
                           tenant_id=result.tenant_id, request_id=result.request_id, batch_id=result.batch_id,
                           url=result.webhook_url, type=payload.type, payload=payload_body(payload), due_at=now,
                           created_at=now)


def delivery_for_batch(done: BatchCompleted, now: datetime) -> WebhookDelivery | None:
    """``batch.completed`` with its counts and the manifest link (None when the batch named no webhook)."""
    if not done.webhook_url:
        return None
    payload = BatchCompletedWebhook(timestamp=now, data=BatchWebhookData(
        batch_id=done.batch_id, tenant_id=done.tenant_id, counts=done.counts.model_dump(), tokens=done.tokens,
        manifest_url=done.manifest_url, manifest_key=done.manifest_key, errors_key=done.errors_key,
        expired=done.expired, completed_at=done.completed_at))
    return WebhookDelivery(delivery_id=delivery_id(done.tenant_id, done.batch_id, payload.type),
                           tenant_id=done.tenant_id, batch_id=done.batch_id, url=done.webhook_url,
                           type=payload.type, payload=payload_body(payload), due_at=now, created_at=now)


def payload_body(payload: WebhookPayload) -> str:
    """The body exactly as signed and sent: compact JSON, unset optional fields left out."""
    return payload.model_dump_json(exclude_none=True)


def signed_headers(delivery: WebhookDelivery, secrets: Sequence[str], now: datetime) -> dict[str, str]:
    if not secrets:
        raise Refused(f"tenant {delivery.tenant_id} has no webhook signing secret; set one with "
                      f"`framebus webhooks secret {delivery.tenant_id}`")
    signatures = " ".join(Webhook(secret).sign(delivery.delivery_id, now, delivery.payload) for secret in secrets)
    return {"webhook-id": delivery.delivery_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": "framebus-notifier"}


# --- SSRF guard --------------------------------------------------------------------------------
Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


def check_destination(url: str, allowed_hosts: frozenset[str], resolver: Resolver = resolve) -> None:
    """Refuse URLs that reach loopback, private, link-local (cloud metadata), multicast or reserved
    addresses, unless the host is allowlisted. Every resolved address must be public."""
    host = urlsplit(url).hostname or ""
    if host in allowed_hosts:
        return
    try:
        addresses = resolver(host)
    except OSError as exc:
        raise Refused(f"cannot resolve {host!r}: {exc}") from exc
    for raw in addresses:
        address = ipaddress.ip_address(raw.split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified or not address.is_global):
            raise Refused(f"{host} resolves to {address}, a non-public address; allowlist the host in "
                          f"FRAMEBUS_WEBHOOK_ALLOWED_HOSTS if it is yours")


# --- what an answer means ----------------------------------------------------------------------
@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class RetryAt:
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str
    disable_endpoint: bool = False  # 410 Gone


Outcome = Delivered | RetryAt | GiveUp


@dataclass(frozen=True)
class RetryPolicy:
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.2  # +-20%, so a recovering endpoint is not hit by every retry at once

    def next_due(self, attempts_made: int, now: datetime, rng: random.Random,
                 retry_after_s: float | None = None) -> datetime | None:
        """When to try again after ``attempts_made`` attempts, or None when the schedule is spent."""
        if attempts_made > len(self.schedule_s):
            return None
        delay = self.schedule_s[attempts_made - 1] * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return now + timedelta(seconds=delay)


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(header) - now).total_seconds())
        except (TypeError, ValueError):
            return None


def judge(status_code: int | None, error: str | None, retry_after: str | None, attempts_made: int,
          policy: RetryPolicy, now: datetime, rng: random.Random) -> Outcome:
    """Only 2xx is success; 410 gives up and disables the endpoint; anything else retries on schedule."""
    if status_code is not None and 200 <= status_code < 300:
        return Delivered()
    if status_code == 410:
        return GiveUp("the endpoint answered 410 Gone", disable_endpoint=True)
    reason = f"HTTP {status_code}" if status_code is not None else (error or "no answer")
    due = policy.next_due(attempts_made, now, rng, retry_after_seconds(retry_after, now))
    if due is None:
        return GiveUp(f"{reason} after {attempts_made} attempts")
    return RetryAt(due, reason)
