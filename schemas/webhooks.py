"""The notifier's own records: pending deliveries, attempts, and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from framebus.schemas import limits
from framebus.schemas.events import Event, RequestId, TenantId, utc_now

# Delay before each retry of a failed delivery: the Standard Webhooks reference schedule
# (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h), then the dead-letter topic.
RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)

WebhookType = Literal["generation.completed", "generation.failed", "generation.cancelled", "batch.completed"]


class WebhookDelivery(Event):
    """framebus.webhooks.pending (compacted, key = delivery id): a delivery not yet finished.

    ``delivery_id`` is the Standard Webhooks ``webhook-id``: the same on every retry and
    replay, so a receiver can drop duplicates.
    """

    event_type: ClassVar[str] = "framebus.webhook.pending"

    delivery_id: str = Field(pattern=r"^msg_[A-Za-z0-9]{1,64}$")
    tenant_id: TenantId
    request_id: RequestId | None = None
    batch_id: str | None = None
    url: str = Field(max_length=limits.WEBHOOK_URL_MAX_CHARS)
    type: WebhookType
    payload: str = Field(max_length=16 * 1024, description="The JSON body, exactly as signed and sent.")
    attempt: int = Field(0, ge=0, description="Attempts made so far.")
    due_at: datetime = Field(default_factory=utc_now)
    created_at: datetime = Field(default_factory=utc_now)
    traceparent: str | None = Field(None, max_length=128,
                                    description="The request's trace, which each attempt continues (1.4).")

    def partition_key(self) -> str:
        return self.delivery_id


class WebhookAttempted(Event):
    """framebus.webhooks.attempts (key = request id): one HTTP attempt and what came of it."""

    event_type: ClassVar[str] = "framebus.webhook.attempted"

    delivery_id: str
    tenant_id: TenantId
    request_id: RequestId | None = None
    url: str
    attempt: int = Field(ge=1)
    status_code: int | None = None
    error: str | None = Field(None, max_length=512)
    duration_ms: float = Field(0.0, ge=0)
    outcome: Literal["delivered", "retry", "dead", "disabled", "refused"]
    next_attempt_at: datetime | None = None
    at: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        return self.request_id or self.delivery_id


class WebhookDead(Event):
    """framebus.webhooks.dead (key = tenant): a delivery that will not be retried, for replay."""

    event_type: ClassVar[str] = "framebus.webhook.dead"

    delivery: WebhookDelivery
    tenant_id: TenantId
    reason: str = Field(max_length=512)
    at: datetime = Field(default_factory=utc_now)


class WebhookSecrets(Event):
    """framebus.webhooks.secrets (compacted, key = tenant): a tenant's signing secrets, newest first.

    Kept off framebus.tenants so that only the notifier (and the admin CLI) can read them:
    grant that topic to nothing else.
    """

    event_type: ClassVar[str] = "framebus.webhook.secrets"

    tenant_id: TenantId
    secrets: tuple[str, ...] = Field(min_length=1, max_length=4,
                                     description="Standard Webhooks secrets (whsec_...); several while rotating.")
    updated_at: datetime = Field(default_factory=utc_now)


class SigningKeys(Event):
    """framebus.signing.keys (compacted, key = tenant): the keys that prove a tenant on the Kafka
    path (framebus.signing), newest first; two while rotating, so producers can switch over.

    Like webhook secrets, kept on a topic of their own: only the scheduler (which verifies)
    and operators may read it.
    """

    event_type: ClassVar[str] = "framebus.signing.keys"

    tenant_id: TenantId
    keys: tuple[str, ...] = Field(min_length=1, max_length=2, description="Signing keys (fbsk_...), newest first (1.7).")
    updated_at: datetime = Field(default_factory=utc_now)


# --- what a receiver gets ----------------------------------------------------------------
# The body of each webhook, as models: the notifier builds bodies from them and their JSON
# Schemas are published (schemas/json/webhook.*.schema.json) for receivers in any language.

class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookVideo(_Payload):
    url: str = Field(description="Presigned GET URL; dies at `expires_at`.")
    stable_url: str | None = Field(None, description="The gateway's link to the video: it never dies, answering "
                                                     "each GET (with the tenant's API key) with a fresh presigned URL.")
    expires_at: datetime
    bucket: str
    key: str
    bytes: int
    sha256: str
    duration_s: float
    width: int
    height: int


class WebhookError(_Payload):
    code: str
    message: str


class GenerationWebhookData(_Payload):
    request_id: str
    tenant_id: str
    outcome: Literal["completed", "failed", "cancelled"]
    tier: str
    model: str | None = None
    batch_id: str | None = None
    custom_id: str | None = None
    metadata: dict[str, str] | None = None
    video: WebhookVideo | None = Field(None, description="generation.completed only.")
    tokens: float | None = Field(None, description="Tokens charged (generation.completed only).")
    error: WebhookError | None = Field(None, description="generation.failed only.")
    reason: str | None = Field(None, description="generation.cancelled only.")


class BatchWebhookData(_Payload):
    batch_id: str
    tenant_id: str
    counts: dict[str, int]
    tokens: float
    manifest_url: str
    manifest_key: str
    errors_key: str | None = None
    expired: bool
    completed_at: datetime


class GenerationCompletedWebhook(_Payload):
    type: Literal["generation.completed"] = "generation.completed"
    timestamp: datetime
    data: GenerationWebhookData


class GenerationFailedWebhook(_Payload):
    type: Literal["generation.failed"] = "generation.failed"
    timestamp: datetime
    data: GenerationWebhookData


class GenerationCancelledWebhook(_Payload):
    type: Literal["generation.cancelled"] = "generation.cancelled"
    timestamp: datetime
    data: GenerationWebhookData


class BatchCompletedWebhook(_Payload):
    type: Literal["batch.completed"] = "batch.completed"
    timestamp: datetime
    data: BatchWebhookData


WEBHOOK_PAYLOADS: dict[str, type[_Payload]] = {
    "generation.completed": GenerationCompletedWebhook, "generation.failed": GenerationFailedWebhook,
    "generation.cancelled": GenerationCancelledWebhook, "batch.completed": BatchCompletedWebhook}
WebhookPayload = GenerationCompletedWebhook | GenerationFailedWebhook | GenerationCancelledWebhook | BatchCompletedWebhook
