"""What the gateway's routes work with: tables, the producer client, the rate limiter.

Routes translate HTTP; this object owns the decisions (idempotency, cancel rules) and
raises GatewayError subclasses that app.py maps to status codes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from framebus.client import FramebusClient, Receipt, receipt_from_status
from framebus.results import StreamItem
from framebus.schemas.events import GenerationRequest, StatusChanged, TenantUpdated
from framebus.schemas.state import ErrorCode
from framebus.services.batch.view import BatchSummary
from framebus.services.common.errors import FramebusError
from framebus.services.common.settings import Settings
from framebus.services.gateway.api import GenerationCreate
from framebus.services.gateway.events import ProgressTable, Watchers, follow
from framebus.services.gateway.keys import parse_key, secret_matches
from framebus.services.gateway.ratelimit import RateLimiter
from framebus.services.gateway.tables import BatchTable, StatusTable, TenantTable
from framebus.services.gateway.videos import VideoLinks


class GatewayError(FramebusError):
    code: ErrorCode = ErrorCode.INTERNAL_ERROR


class Unauthenticated(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class Conflict(GatewayError):
    code = ErrorCode.DUPLICATE_REQUEST


class AlreadyFinished(Conflict):
    """A cancel of a request that has already ended."""

    code = ErrorCode.ALREADY_FINISHED


class NoVideo(NotFound):
    """The request exists but has no video (not finished, or it did not complete)."""


class InvalidQuery(GatewayError):
    code = ErrorCode.INVALID_REQUEST


class RateLimited(GatewayError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"submission rate limit reached; retry in {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Submitted:
    receipt: Receipt
    replayed: bool  # True: an identical earlier submission; nothing new was sent


class Gateway:
    def __init__(self, *, settings: Settings, client: FramebusClient, statuses: StatusTable, tenants: TenantTable,
                 limiter: RateLimiter, batches: BatchTable | None = None, progress: ProgressTable | None = None,
                 watchers: Watchers | None = None, videos: VideoLinks | None = None) -> None:
        self.settings = settings
        self.client = client
        self.statuses = statuses
        self.tenants = tenants
        self.limiter = limiter
        # `is None`, not `or`: an empty table or watcher set is falsy (they have a length).
        self.batches = BatchTable() if batches is None else batches
        self.progress = ProgressTable() if progress is None else progress
        self.watchers = Watchers() if watchers is None else watchers  # the tables notify it: see create_app
        self.videos = VideoLinks(settings) if videos is None else videos
        self._locks = [threading.Lock() for _ in range(64)]  # striped: one id never races itself

    def authenticate(self, authorization: str | None) -> TenantUpdated:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("send `Authorization: Bearer <api key>`")
        parsed = parse_key(authorization.removeprefix("Bearer ").strip())
        found = self.tenants.by_key_id(parsed[0]) if parsed else None
        if parsed is None or found is None or not secret_matches(parsed[1], found[1]) or found[0].disabled:
            raise Unauthenticated("the API key is not valid")
        return found[0]

    def submit(self, tenant: TenantUpdated, body: GenerationCreate, *, traceparent: str | None = None) -> Submitted:
        wait = self.limiter.try_acquire(tenant.tenant_id, tenant.submissions_per_minute
                                        or self.settings.gateway_submissions_per_minute)
        if wait > 0:
            raise RateLimited(wait)
        fields = body.model_dump(exclude_unset=False)
        fields["request_id"] = fields["request_id"] or f"gw-{uuid.uuid4().hex}"
        request = GenerationRequest.model_validate(
            {**fields, "tenant_id": tenant.tenant_id}, context=self.settings.request_context())
        with self._locks[hash((tenant.tenant_id, request.request_id)) % len(self._locks)]:
            existing = self.statuses.get(tenant.tenant_id, request.request_id)
            if existing is not None:
                if existing.request_digest == request.digest():
                    return Submitted(receipt_from_status(existing), replayed=True)
                raise Conflict(f"request_id {request.request_id!r} was already used with a different body")
            return Submitted(self.client.submit(request, traceparent=traceparent), replayed=False)

    def status(self, tenant: TenantUpdated, request_id: str) -> StatusChanged:
        found = self.statuses.get(tenant.tenant_id, request_id)
        if found is None:  # another tenant's request looks exactly like a missing one
            raise NotFound(f"no generation {request_id!r}: statuses are kept for "
                           f"{self.settings.status_retention_days} days (FRAMEBUS_STATUS_RETENTION_DAYS)")
        return found

    def video_url(self, tenant: TenantUpdated, request_id: str) -> str:
        """A freshly presigned URL of the request's video."""
        status = self.status(tenant, request_id)
        if status.output is None:
            raise NoVideo(f"generation {request_id!r} has no video: it is {status.state.value}")
        return self.videos.presign(tenant, status.output)

    async def events(self, tenant: TenantUpdated, request_id: str) -> AsyncIterator[StreamItem]:
        """The request's states and progress from now until its terminal state (``follow``)."""
        key = (tenant.tenant_id, request_id)
        queue = self.watchers.open(key)  # before reading the row: nothing can slip between the two
        try:
            current = self.status(tenant, request_id)
            async for item in follow(current, self.progress.get(*key), queue, self.settings.video_link):
                yield item
        finally:
            self.watchers.close(key, queue)

    def rotate_webhook_secret(self, tenant: TenantUpdated) -> str:
        """A new signing secret for the caller's webhooks; the previous one keeps signing too."""
        from framebus.services.gateway.tenants import TenantAdmin

        return TenantAdmin(self.client).rotate_webhook_secret(tenant.tenant_id).secrets[0]

    def cancel(self, tenant: TenantUpdated, request_id: str) -> StatusChanged:
        status = self.status(tenant, request_id)
        if status.state.is_terminal:
            raise AlreadyFinished(f"generation {request_id!r} is already {status.state.value}")
        self.client.kafka.cancel(request_id, tenant_id=tenant.tenant_id)
        return status

    def usage(self, tenant: TenantUpdated, start: datetime, end: datetime, group_by: str):
        """The caller's own usage, folded from its partition of the ledger (exact, never cached)."""
        from framebus.services.metering.queries import usage_report

        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidQuery("`from` and `to` need a time zone (e.g. 2026-11-01T00:00:00Z)")
        if end <= start:
            raise InvalidQuery(f"`to` ({end.isoformat()}) must be after `from` ({start.isoformat()})")
        return usage_report(self.settings, tenant_id=tenant.tenant_id, start=start, end=end,
                            group_by=group_by)  # type: ignore[arg-type]

    def submit_batch(self, tenant: TenantUpdated, path, *, webhook_url: str | None, completion_window_s: float,
                     strict: bool):
        """Validate and publish an uploaded JSONL file (the same path as `framebus batch submit`)."""
        from framebus.services.batch.submit import submit_batch

        if webhook_url is not None:  # the same rule as a request's webhook: https, or http to an allowlisted host
            GenerationRequest.model_validate({"request_id": "check", "tenant_id": tenant.tenant_id, "prompt": "x",
                                              "webhook_url": webhook_url},
                                             context=self.settings.request_context())
        return submit_batch(self.settings, path, tenant.tenant_id, webhook_url=webhook_url,
                            completion_window_s=completion_window_s, strict=strict)

    def batch(self, tenant: TenantUpdated, batch_id: str) -> BatchSummary:
        """The batch as submitted, its progress as the tracker last counted it, its completion."""
        summary = self.batches.summary(batch_id)
        if summary is None or summary.submitted.tenant_id != tenant.tenant_id:
            raise NotFound(f"no batch {batch_id!r}")
        return summary
