"""The event models: the source of truth of the framebus contract.

Every event carries ``schema_version`` "MAJOR.MINOR". Within a major version changes are
additive only: a consumer accepts a newer minor (ignoring fields it does not know) and
rejects an unknown major with ``unsupported_version``. Producers are strict: unknown
fields are rejected, so a typo such as ``widht`` never reaches Kafka.

Bounds live in ``schemas.limits``; messages name the field and the value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from framebus.schemas import limits
from framebus.schemas.models import DEFAULT_MODEL, MODEL_DEFAULTS
from framebus.schemas.state import ErrorCode, ModelName, RequestState, Tier
from framebus.schemas.tokens import quote_tokens

SCHEMA_VERSION = "1.8"
ANY_HOST = "*"  # webhook_http_hosts value for records past admission, where the allowlist was already applied
ADMITTED = {"webhook_http_hosts": ANY_HOST}  # validation context for those records


def utc_now() -> datetime:
    return datetime.now(UTC)


RequestId = Annotated[str, Field(pattern=limits.REQUEST_ID_PATTERN, description="Client-chosen idempotency key: 1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit.")]
TenantId = Annotated[str, Field(pattern=limits.TENANT_ID_PATTERN, description="Tenant id: 2-63 of a-z 0-9 -, starting with a letter or digit.")]
BatchId = Annotated[str, Field(pattern=limits.BATCH_ID_PATTERN)]
Tokens = Annotated[float, Field(ge=0, description="Tokens, to 0.001.")]


class Event(BaseModel):
    """Base of every event: strict, immutable, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    event_type: ClassVar[str]
    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+$",
                                description="MAJOR.MINOR of the event's schema.")

    def partition_key(self) -> str:
        """The Kafka record key; by default the tenant, so one partition owns each tenant."""
        return self.tenant_id  # type: ignore[attr-defined]

    def subject(self) -> str:
        return self.tenant_id  # type: ignore[attr-defined]


# --- requests --------------------------------------------------------------------------

class GenerationFields(BaseModel):
    """What to render: the fields a client chooses, shared by the event and the HTTP body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier = Tier.STANDARD
    prompt: str = Field(min_length=1, description=f"At most {limits.PROMPT_MAX_BYTES} UTF-8 bytes.")
    negative_prompt: str = Field("", description=f"At most {limits.NEGATIVE_PROMPT_MAX_BYTES} UTF-8 bytes.")
    model: ModelName | None = Field(None, description="Unset: the stack's default model (FRAMEBUS_DEFAULT_MODEL).")
    width: int | None = Field(None, ge=limits.MIN_DIMENSION, le=limits.MAX_DIMENSION,
                       description=f"Pixels; a multiple of {limits.DIMENSION_MULTIPLE}. Unset: the model's default.",
                       json_schema_extra={"multipleOf": limits.DIMENSION_MULTIPLE})
    height: int | None = Field(None, ge=limits.MIN_DIMENSION, le=limits.MAX_DIMENSION,
                        description=f"Pixels; a multiple of {limits.DIMENSION_MULTIPLE}. Unset: the model's default.",
                        json_schema_extra={"multipleOf": limits.DIMENSION_MULTIPLE})
    num_frames: int | None = Field(None, ge=1, le=limits.MAX_NUM_FRAMES,
                            description="Frames; 4k+1 (1, 5, 9, ... 81, ...). Unset: the model's default.")
    fps: int | None = Field(None, ge=limits.MIN_FPS, le=limits.MAX_FPS, description="Unset: the model's default.")
    num_inference_steps: int | None = Field(None, ge=limits.MIN_STEPS, le=limits.MAX_STEPS,
                                     description="Unset: the model's default.")
    guidance_scale: float = Field(5.0, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=limits.MAX_SEED, description="Unset: the scheduler picks one and reports it.")
    webhook_url: str | None = Field(None, max_length=limits.WEBHOOK_URL_MAX_CHARS,
                                    description="https URL for completion webhooks (http only for allowlisted hosts).")
    batch_id: BatchId | None = None
    custom_id: str | None = Field(None, pattern=limits.CUSTOM_ID_PATTERN)
    metadata: dict[str, str] = Field(default_factory=dict, description="Small free-form map echoed on every event.")

    @model_validator(mode="after")
    def _defaults_from_the_model(self, info: ValidationInfo) -> GenerationFields:
        """Fill what was left out (or None): the model from the validation context's
        ``default_model`` (the stack's), else ``DEFAULT_MODEL``; size, frames, fps and steps from
        that model's ``MODEL_DEFAULTS``. (After validation, so JSON input keeps JSON's rules.)"""
        if self.model is None:
            object.__setattr__(self, "model", ModelName((info.context or {}).get("default_model") or DEFAULT_MODEL))
        defaults = MODEL_DEFAULTS[self.model]
        for key, value in defaults.fields().items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)  # frozen model: filling in once, while it is built
        for key in ("width", "height"):
            if getattr(self, key) % defaults.size_multiple:
                size = getattr(self, key)
                raise ValueError(f"`{key}` must be a multiple of {defaults.size_multiple} for {self.model.value} but "
                                 f"is {size} (e.g. {size - size % defaults.size_multiple} or "
                                 f"{size - size % defaults.size_multiple + defaults.size_multiple})")
        return self

    @field_validator("prompt")
    @classmethod
    def _prompt_fits(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("`prompt` must contain more than whitespace")
        _max_bytes("prompt", value, limits.PROMPT_MAX_BYTES)
        return value

    @field_validator("negative_prompt")
    @classmethod
    def _negative_prompt_fits(cls, value: str) -> str:
        _max_bytes("negative_prompt", value, limits.NEGATIVE_PROMPT_MAX_BYTES)
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value % limits.DIMENSION_MULTIPLE:
            raise ValueError(f"`{info.field_name}` must be a multiple of {limits.DIMENSION_MULTIPLE} but is {value}")
        return value

    @field_validator("num_frames")
    @classmethod
    def _four_k_plus_one(cls, value: int | None) -> int | None:
        if value is not None and (value - 1) % 4:
            raise ValueError(f"`num_frames` must be 4k+1 (e.g. {value - (value - 1) % 4} or "
                             f"{value + 4 - (value - 1) % 4}) but is {value}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > limits.METADATA_MAX_KEYS:
            raise ValueError(f"`metadata` may have at most {limits.METADATA_MAX_KEYS} keys but has {len(value)}")
        for key, item in value.items():
            if not re.match(limits.METADATA_KEY_PATTERN, key):
                raise ValueError(f"`metadata` key {key!r} must be 1-64 of A-Z a-z 0-9 _ . -")
            if len(item) > limits.METADATA_VALUE_MAX_CHARS:
                raise ValueError(f"`metadata[{key!r}]` must be at most {limits.METADATA_VALUE_MAX_CHARS} characters "
                                 f"but is {len(item)}")
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > limits.METADATA_MAX_BYTES:
            raise ValueError(f"`metadata` must encode to at most {limits.METADATA_MAX_BYTES} bytes but is {size}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_https(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            url = AnyUrl(value)
        except ValueError as exc:
            raise ValueError(f"`webhook_url` is not a valid URL: {value!r}") from exc
        if url.username or url.password:
            raise ValueError("`webhook_url` must not carry credentials")
        context = info.context or {}
        allowed_http = context.get("webhook_http_hosts", frozenset())
        allowed_private = ANY_HOST if allowed_http == ANY_HOST else {*allowed_http,
                                                                     *context.get("webhook_allowed_hosts", ())}
        if not (url.scheme == "https" or (url.scheme == "http" and (allowed_http == ANY_HOST or url.host in allowed_http))):
            raise ValueError(f"`webhook_url` must use https (http only for allowlisted hosts) but is {value!r}")
        if allowed_private != ANY_HOST and url.host not in allowed_private and not _public_host(url.host or ""):
            # What can be decided from the URL alone is refused here, so the client learns it at
            # once; names that resolve to private addresses are refused by the notifier when it calls.
            raise ValueError(f"`webhook_url` must point to a public address, but {url.host!r} is local or private")
        return value

    def quote(self) -> float:
        return quote_tokens(width=self.width, height=self.height, num_frames=self.num_frames,
                            num_inference_steps=self.num_inference_steps, prompt=self.prompt)


class GenerationRequest(Event, GenerationFields):
    """framebus.generation.requested: one prompt to render, for one tenant."""

    event_type: ClassVar[str] = "framebus.generation.requested"

    request_id: RequestId
    tenant_id: TenantId
    submitted_at: datetime = Field(default_factory=utc_now)

    def digest(self) -> str:
        """A hash of what was asked (not when): equal for an exact resubmission, so idempotency can tell.
        Every status of the request carries it, so a replay is recognised in any state."""
        body = self.model_dump(mode="json", exclude={"submitted_at", "schema_version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def effective_seed(self) -> int:
        """The seed it renders with: its own, or one derived from tenant and request id, so every
        attempt (and every worker) renders the same video and the request itself is never rewritten."""
        if self.seed is not None:
            return self.seed
        derived = hashlib.sha256(f"{self.tenant_id}/{self.request_id}".encode()).digest()
        return int.from_bytes(derived[:8], "big") & limits.MAX_SEED

    def result_fields(self, timings: Timings) -> dict:
        """What every result (completed, failed, cancelled) copies from its request, whoever ends it."""
        return {"request_id": self.request_id, "tenant_id": self.tenant_id, "tier": self.tier, "model": self.model,
                "batch_id": self.batch_id, "custom_id": self.custom_id, "metadata": self.metadata,
                "timings": timings, "webhook_url": self.webhook_url}


def _public_host(host: str) -> bool:
    """False for localhost names and for IP literals that are not globally routable (private,
    loopback, link-local such as cloud metadata at 169.254.169.254, reserved, multicast)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return True  # a DNS name: checked when it is resolved
    return address.is_global and not address.is_multicast


def _max_bytes(field: str, value: str, limit: int) -> None:
    size = len(value.encode())
    if size > limit:
        raise ValueError(f"`{field}` must be at most {limit} UTF-8 bytes but is {size}")


class CancelRequested(Event):
    """framebus.control.cancel: stop a request; queued ones end at once, running ones between steps."""

    event_type: ClassVar[str] = "framebus.control.cancel"

    request_id: RequestId
    tenant_id: TenantId
    reason: str = Field("cancelled by the client", max_length=512)
    requested_at: datetime = Field(default_factory=utc_now)


# --- results -----------------------------------------------------------------------------

class Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str
    key: str
    url: str = Field(description="Presigned GET URL.")
    url_expires_at: datetime
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    duration_s: float = Field(ge=0)
    codec: str
    width: int
    height: int
    num_frames: int
    fps: int
    poster_key: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: Tokens
    gpu_seconds: float = Field(0.0, ge=0)
    steps_run: int = Field(0, ge=0)
    steps_skipped_by_cache: int = Field(0, ge=0)
    result_cache_hit: bool = Field(False, description="Served by a copy of an identical earlier video: no GPU work.")
    machine: str | None = Field(None, max_length=64, description="Machine kind the GPU seconds ran on (cost model).")


class Timings(BaseModel):
    """Wall-clock points and stage durations; each is set by the stage that knows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    queued_s: float | None = Field(None, description="Submission to the worker starting it.")
    text_encode_s: float | None = Field(None, description="Prompt encoding by the text encoder, before denoising (1.5).")
    denoise_s: float | None = None
    decode_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None
    finished_at: datetime | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str = Field(max_length=2048)


class _Result(Event):
    request_id: RequestId
    tenant_id: TenantId
    tier: Tier
    model: ModelName
    batch_id: BatchId | None = None
    custom_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    timings: Timings = Field(default_factory=Timings)
    webhook_url: str | None = Field(None, max_length=limits.WEBHOOK_URL_MAX_CHARS,
                                    description="The request's webhook, carried so the notifier needs no lookup.")


class GenerationCompleted(_Result):
    event_type: ClassVar[str] = "framebus.generation.completed"

    outcome: Literal["completed"] = "completed"
    output: Output
    usage: Usage
    seed: int = Field(ge=0, le=limits.MAX_SEED)


class GenerationFailed(_Result):
    event_type: ClassVar[str] = "framebus.generation.failed"

    model: ModelName | None = Field(None, description="Unset when the request named no valid model.")
    outcome: Literal["failed"] = "failed"
    error: ErrorInfo
    usage: Usage | None = None


class GenerationCancelled(_Result):
    event_type: ClassVar[str] = "framebus.generation.cancelled"

    outcome: Literal["cancelled"] = "cancelled"
    reason: str = Field("cancelled", max_length=512)
    usage: Usage | None = None


class StatusChanged(Event):
    """framebus.generation.status, on the compacted status topic: the latest state of a request."""

    event_type: ClassVar[str] = "framebus.generation.status"

    request_id: RequestId
    tenant_id: TenantId
    state: RequestState
    tier: Tier
    updated_at: datetime = Field(default_factory=utc_now)
    request_digest: str | None = Field(None, description="sha256 of the request, for idempotent resubmission.")
    tokens: Tokens | None = None
    # Where the request record sits, so an idempotent resubmission returns the same receipt.
    request_topic: str | None = None
    request_partition: int | None = None
    request_offset: int | None = None
    request_event_id: str | None = None
    batch_id: BatchId | None = None
    output: Output | None = None
    error: ErrorInfo | None = None
    timings: Timings = Field(default_factory=Timings)
    waiting_reason: str | None = Field(None, max_length=1024,
                                       description="Why a queued request cannot run yet (e.g. no worker serves its model).")

    def partition_key(self) -> str:
        # Request ids are chosen by clients, so two tenants may pick the same one.
        return status_key(self.tenant_id, self.request_id)


ProgressStage = Literal["denoising", "encoding", "uploading"]


class GenerationProgress(Event):
    """framebus.progress (short retention): how far a running request is, between status changes (1.6).

    Reported by the worker: denoising step counts (the first and last step, and at most one a
    second between), then encoding and uploading. Followers (the gateway's event stream, the
    SDK) show it; nothing decides on it, so a lost record costs a progress line, not a result.
    """

    event_type: ClassVar[str] = "framebus.generation.progress"

    request_id: RequestId
    tenant_id: TenantId
    stage: ProgressStage
    step: int | None = Field(None, ge=0, description="Denoising steps done (denoising only).")
    steps: int | None = Field(None, ge=1, description="Denoising steps in all (denoising only).")
    at: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        return status_key(self.tenant_id, self.request_id)


def status_key(tenant_id: str, request_id: str) -> str:
    return f"{tenant_id}/{request_id}"


RECEIPT_FIELDS = ("request_digest", "tokens", "request_topic", "request_partition", "request_offset",
                  "request_event_id")


def furthest(current: StatusChanged | None, arriving: StatusChanged) -> StatusChanged:
    """What a reader of framebus.status keeps when ``arriving`` follows ``current`` for one request:
    the furthest state (a late `accepted` never hides progress; the first terminal record is the
    request's one result), with the receipt fields and accepted time carried from the other."""
    if current is None:
        return arriving
    if current.state.is_terminal or arriving.state.progress < current.state.progress:
        return _carry_receipt(arriving, current)
    return _carry_receipt(current, arriving)


def _carry_receipt(other: StatusChanged, kept: StatusChanged) -> StatusChanged:
    missing = {name: getattr(other, name) for name in RECEIPT_FIELDS
               if getattr(kept, name) is None and getattr(other, name) is not None}
    # The `accepted` record (written with the receipt) is the authority on when it was accepted;
    # later writers only estimate it from the request's submission time.
    accepted_at = other.timings.accepted_at
    if accepted_at is not None and accepted_at != kept.timings.accepted_at and (
            kept.timings.accepted_at is None or other.state is RequestState.ACCEPTED):
        missing["timings"] = kept.timings.model_copy(update={"accepted_at": accepted_at})
    return kept.model_copy(update=missing) if missing else kept

# --- metering and ledger ----------------------------------------------------------------


class UsageRecorded(Event):
    """framebus.usage.recorded: shaped for OpenMeter-style ingestion (subject = tenant)."""

    event_type: ClassVar[str] = "framebus.usage.recorded"

    request_id: RequestId
    tenant_id: TenantId
    tier: Tier
    model: ModelName
    tokens: Tokens
    gpu_seconds: float = Field(ge=0)
    video_seconds: float = Field(ge=0)
    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    recorded_at: datetime = Field(default_factory=utc_now)


class _LedgerEntry(Event):
    tenant_id: TenantId
    entry_id: str = Field(min_length=1, max_length=128, description="Unique per entry; folds dedupe on it.")
    tokens: Tokens
    at: datetime = Field(default_factory=utc_now)


class LedgerCredited(_LedgerEntry):
    event_type: ClassVar[str] = "framebus.ledger.credited"

    reason: str = Field("credit", max_length=512)
    actor: str = Field("admin", max_length=128)


class LedgerReserved(_LedgerEntry):
    event_type: ClassVar[str] = "framebus.ledger.reserved"

    request_id: RequestId


class _Settlement(_LedgerEntry):
    """What metering needs to tally a settled request without reading any other topic."""

    request_id: RequestId
    tier: Tier | None = None
    model: ModelName | None = None


class LedgerCharged(_Settlement):
    event_type: ClassVar[str] = "framebus.ledger.charged"

    gpu_seconds: float = Field(0.0, ge=0)
    video_seconds: float = Field(0.0, ge=0)
    machine: str | None = Field(None, max_length=64)
    result_cache_hit: bool = False


class LedgerReleased(_Settlement):
    event_type: ClassVar[str] = "framebus.ledger.released"

    reason: str = Field("released", max_length=512)
    outcome: Literal["failed", "cancelled", "expired"] | None = None
    gpu_seconds: float = Field(0.0, ge=0, description="Work done before it failed or was cancelled (cost, never billed).")
    machine: str | None = Field(None, max_length=64)


class TenantLedger(BaseModel):
    """One tenant's fold of the ledger: sums, open reservations, and what dedupes the window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credited: Decimal
    charged: Decimal
    reservations: dict[str, Decimal] = Field(default_factory=dict, description="Request id to tokens held.")
    settled: dict[str, float] = Field(default_factory=dict,
                                      description="Request id to when it was settled (epoch s), within the dedupe window.")
    entries: dict[str, float] = Field(default_factory=dict,
                                      description="Entry id to its time (epoch s), within the dedupe window.")


class LedgerSnapshot(Event):
    """The fold of one framebus.ledger partition up to ``next_offset`` (1.8): a reader loads it and
    folds only the entries from that offset on, so start-up does not grow with the ledger."""

    event_type: ClassVar[str] = "framebus.ledger.snapshot"

    partition: int = Field(ge=0)
    next_offset: int = Field(ge=0, description="The first ledger offset of the partition not folded in.")
    taken_at: datetime = Field(default_factory=utc_now)
    dedupe_window_s: float = Field(gt=0, description="How far back ``settled`` and ``entries`` reach.")
    tenants: dict[str, TenantLedger] = Field(default_factory=dict)

    def partition_key(self) -> str:
        return str(self.partition)

    def subject(self) -> str:
        return f"partition-{self.partition}"


# --- batches and tenants -------------------------------------------------------------------

class BatchCounts(BaseModel):
    """A batch's lines by outcome. ``total`` counts the valid lines (each a request); ``rejected``
    the lines validation refused, so ``total + rejected`` is every non-blank line of the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: int = Field(ge=0)
    completed: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    cancelled: int = Field(0, ge=0)
    rejected: int = Field(0, ge=0, description="Lines refused by validation (1.4).")
    queued: int = Field(0, ge=0, description="Lines not dispatched yet (progress only; 1.4).")
    running: int = Field(0, ge=0, description="Lines dispatched or running (progress only; 1.4).")

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled


class BatchSubmitted(Event):
    """framebus.batches: a bulk job was accepted. Its lines (custom id -> request id) are in S3
    at ``input_key``; the tracker reads them from there, so the record stays small."""

    event_type: ClassVar[str] = "framebus.batch.submitted"

    batch_id: BatchId
    tenant_id: TenantId
    accepted: int = Field(ge=0, description="Valid lines, each a request on the batch tier.")
    rejected: int = Field(0, ge=0, description="Lines refused by validation (reported with line numbers).")
    input_key: str
    webhook_url: str | None = Field(None, max_length=limits.WEBHOOK_URL_MAX_CHARS)
    completion_window_s: float = Field(86400.0, gt=0, le=7 * 86400)
    submitted_at: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        return self.batch_id

    @property
    def deadline(self) -> datetime:
        return self.submitted_at + timedelta(seconds=self.completion_window_s)


class BatchCompleted(Event):
    event_type: ClassVar[str] = "framebus.batch.completed"

    batch_id: BatchId
    tenant_id: TenantId
    counts: BatchCounts
    tokens: Tokens
    manifest_key: str
    manifest_url: str
    errors_key: str | None = None
    expired: bool = Field(False, description="The completion window ended first; unfinished lines were cancelled.")
    webhook_url: str | None = Field(None, max_length=limits.WEBHOOK_URL_MAX_CHARS)
    completed_at: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        return self.batch_id


class BatchProgress(Event):
    """framebus.batches.progress (compacted, one record per batch): the tracker's running count
    of a batch's lines by state, so a progress query reads one record, not every status."""

    event_type: ClassVar[str] = "framebus.batch.progress"

    batch_id: BatchId
    tenant_id: TenantId
    counts: BatchCounts
    finished: bool = Field(False, description="The batch is completed (the manifest is written).")
    updated_at: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        return self.batch_id


class ApiKeyRecord(BaseModel):
    """A tenant's API key as stored: its public id and the SHA-256 of its secret, never the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=r"^[a-z0-9]{8,32}$")
    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime = Field(default_factory=utc_now)
    revoked: bool = False


class TenantStorage(BaseModel):
    """A tenant's own bucket. Credentials are a reference, resolved on the workers from
    ``FRAMEBUS_CREDENTIALS_{REF}_ACCESS_KEY_ID`` / ``..._SECRET_ACCESS_KEY``: never in events or logs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str = Field(pattern=r"^https?://[^\s/]+(/.*)?$", max_length=512,
                              description="e.g. https://us-ord-1.linodeobjects.com")
    region: str = Field(min_length=1, max_length=64)
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    credentials_ref: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,62}$",
                                 description="Names the worker's FRAMEBUS_CREDENTIALS_{REF}_* variables.")
    addressing_style: Literal["path", "virtual"] = "path"


class TenantUpdated(Event):
    """framebus.tenant.updated, on the compacted tenants topic: a tenant's full current settings."""

    event_type: ClassVar[str] = "framebus.tenant.updated"

    tenant_id: TenantId
    display_name: str = Field("", max_length=256)
    api_keys: tuple[ApiKeyRecord, ...] = ()
    credit_limit_tokens: Tokens = 0.0
    submissions_per_minute: int | None = Field(None, ge=1, le=100_000, description="Unset: the gateway default.")
    disabled: bool = False
    storage: TenantStorage | None = Field(None, description="The tenant's own bucket; unset: framebus's.")
    disabled_webhook_urls: tuple[str, ...] = Field(
        (), max_length=256, description="Endpoints that answered 410 Gone; nothing is sent to them until re-enabled.")
    updated_at: datetime = Field(default_factory=utc_now)

