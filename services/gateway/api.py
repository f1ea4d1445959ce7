"""The HTTP shapes of the gateway: request bodies, responses and the error envelope."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framebus.schemas.events import GenerationFields, RequestId
from framebus.schemas.state import ModelName, RequestState


class GenerationCreate(GenerationFields):
    """POST /v1/generations: what to render. The tenant comes from the API key."""

    request_id: RequestId | None = Field(
        None, description="Idempotency key. Same id and body again: the same receipt. Same id, other body: 409. "
                          "Unset: the gateway picks one (no idempotency).")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_https(cls, value: str | None) -> str | None:
        # Replaces the inherited check: the scheme rule needs the gateway's allowlist, so the
        # gateway applies it when it builds the GenerationRequest (a 422 names the field either way).
        return value


class WebhookSecretIssued(BaseModel):
    secret: str = Field(description="The new signing secret (whsec_...), shown this once. The previous one keeps "
                                    "signing too until the next rotation, so receivers can switch over.")


class CancelAccepted(BaseModel):
    request_id: str
    state: RequestState
    cancel_requested: bool = True


class Quote(BaseModel):
    tokens: float = Field(description="Tokens this request will be billed, per the published formula.")
    standard_units: float = Field(description="tokens / 100: multiples of a 1024x1024, 81-frame, 50-step request.")
    model: ModelName = Field(description="The model quoted for (the stack's default when none was named).")
    width: int
    height: int
    num_frames: int
    num_inference_steps: int


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


class UsageRow(BaseModel):
    group: str = Field(description="The tier, model, day (YYYY-MM-DD) or hour (YYYY-MM-DDTHH:00Z).")
    requests: int = Field(description="Requests that ended (completed, failed, cancelled, expired).")
    completed: int
    failed: int
    cancelled: int
    expired: int
    result_cache_hits: int = Field(description="Completed by a copy of an identical earlier video.")
    tokens: float = Field(description="Tokens charged (completed requests only).")
    video_seconds: float
    amount: str = Field(description="What the tokens cost at the price book, as a decimal string.")
    currency: str


class UsageResponse(BaseModel):
    tenant_id: str
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    group_by: str
    groups: list[UsageRow]
    total: UsageRow

    model_config = ConfigDict(populate_by_name=True)


class RejectedLine(BaseModel):
    line: int = Field(description="The line's number in the file, counting from 1.")
    custom_id: str | None = Field(None, description="Its custom id, where one could be read.")
    error: str


class BatchCreated(BaseModel):
    batch_id: str
    accepted: int = Field(description="Valid lines, each now a request on the batch tier.")
    rejected: list[RejectedLine] = Field(description="Every invalid line with its number.")
    published: int = Field(description="Requests sent by this call (0 when resubmitting a batch already in).")
    already_in: int
    strict_refused: bool = Field(description="True: --strict and some line was invalid, so nothing was sent.")


BATCH_STATES = ("queued", "running", "completed", "failed", "cancelled")


class BatchView(BaseModel):
    batch_id: str
    state: Literal["running", "finished", "expired"]
    accepted: int
    rejected: int
    counts: dict[str, int] = Field(description="Lines per state: queued, running, completed, failed, cancelled "
                                               "(as the batch tracker last counted them).")
    submitted_at: datetime
    deadline: datetime
    manifest_url: str | None = None
    errors_key: str | None = None
