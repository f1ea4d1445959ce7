"""HTTP routes: translate requests to Gateway calls and results to responses, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from framebus.client import Receipt
from framebus.results import GenerationStatus
from framebus.schemas import limits
from framebus.schemas.events import GenerationFields, TenantUpdated
from framebus.schemas.state import ModelName
from framebus.services.common.metrics import prometheus_text
from framebus.services.gateway.api import (
    BATCH_STATES,
    BatchCreated,
    BatchView,
    CancelAccepted,
    ErrorResponse,
    GenerationCreate,
    Quote,
    UsageResponse,
    UsageRow,
    WebhookSecretIssued,
)
from framebus.services.gateway.runtime import Gateway

router = APIRouter()
ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422, 429, 503)}
RequestIdPath = Annotated[str, Path(pattern=limits.REQUEST_ID_PATTERN, max_length=128)]


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


# The tenant's API key as an HTTP bearer token: the OpenAPI document names the scheme, so
# generated clients and the docs page send it. Errors stay ours (401 with the error envelope).
bearer = HTTPBearer(auto_error=False, bearerFormat="fb_<key id>_<secret>",
                    description="The tenant's API key (`framebus tenants issue-key TENANT`).")


async def tenant(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> TenantUpdated:
    # async: an in-memory lookup, no reason to hop to the thread pool
    return gateway(request).authenticate(f"Bearer {credentials.credentials}" if credentials else None)


Tenant = Annotated[TenantUpdated, Depends(tenant)]


@router.post("/v1/generations", status_code=201, response_model=Receipt, responses=ERRORS,
             summary="Submit a generation (idempotent on request_id)")
def create_generation(body: GenerationCreate, caller: Tenant, request: Request, response: Response,
                      traceparent: Annotated[str | None, Header(include_in_schema=False)] = None) -> Receipt:
    # A trace the caller started (W3C `traceparent`) is continued through every hop, not replaced.
    submitted = gateway(request).submit(caller, body, traceparent=traceparent)
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return submitted.receipt


@router.get("/v1/generations/{request_id}", response_model=GenerationStatus, responses=ERRORS,
            summary="State, timings and output of a generation")
async def get_generation(request_id: RequestIdPath, caller: Tenant, request: Request) -> GenerationStatus:
    gw = gateway(request)
    return GenerationStatus.from_status(gw.status(caller, request_id), gw.settings.video_link)


@router.get("/v1/generations/{request_id}/video", status_code=302, response_class=RedirectResponse,
            responses={302: {"description": "Found: `Location` is a freshly presigned URL of the MP4."}, **ERRORS},
            summary="The video, by a redirect to a freshly presigned URL (a link that never goes dead)")
async def get_video(request_id: RequestIdPath, caller: Tenant, request: Request) -> RedirectResponse:
    url = await run_in_threadpool(gateway(request).video_url, caller, request_id)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


async def existing_generation(request_id: RequestIdPath, caller: Tenant, request: Request) -> TenantUpdated:
    """404 before the stream starts (afterwards the status line is already sent)."""
    gateway(request).status(caller, request_id)
    return caller


@router.get("/v1/generations/{request_id}/events", response_class=EventSourceResponse, responses=ERRORS,
            summary="Server-Sent Events: the state now, each change and progress line, then the terminal state",
            description="Events: `status` (data: the generation, as GET /v1/generations/{id}) on each state change; "
                        "`progress` (data: stage denoising with step/steps, encoding, uploading) while it runs; "
                        "then one of `completed`, `failed`, `cancelled` (data: the generation) and the stream ends. "
                        "A comment line every 15 s keeps proxies from closing an idle stream.")
async def generation_events(request_id: RequestIdPath, caller: Annotated[TenantUpdated, Depends(existing_generation)],
                            request: Request) -> AsyncIterable[ServerSentEvent]:
    sequence = 0
    async for item in gateway(request).events(caller, request_id):
        if item.data is None:
            yield ServerSentEvent(comment="keep-alive")
            continue
        sequence += 1
        yield ServerSentEvent(event=item.kind, id=str(sequence), data=item.data)


@router.post("/v1/webhooks/secret", status_code=201, response_model=WebhookSecretIssued, responses=ERRORS,
             summary="Rotate your webhook signing secret (the new one is shown once; the old keeps signing too)")
def rotate_webhook_secret(caller: Tenant, request: Request) -> WebhookSecretIssued:
    return WebhookSecretIssued(secret=gateway(request).rotate_webhook_secret(caller))


@router.post("/v1/generations/{request_id}/cancel", status_code=202, response_model=CancelAccepted,
             responses=ERRORS, summary="Cancel a generation that has not finished")
def cancel_generation(request_id: RequestIdPath, caller: Tenant, request: Request) -> CancelAccepted:
    status = gateway(request).cancel(caller, request_id)
    return CancelAccepted(request_id=request_id, state=status.state)


@router.get("/v1/quote", response_model=Quote, responses={422: {"model": ErrorResponse}},
            summary="Tokens a request would cost (no key needed)")
async def quote(request: Request, prompt: Annotated[str, Query(min_length=1, max_length=limits.PROMPT_MAX_BYTES)],
          model: Annotated[ModelName | None, Query(description="Unset: the stack's default model.")] = None,
          width: Annotated[int | None, Query(ge=limits.MIN_DIMENSION, le=limits.MAX_DIMENSION)] = None,
          height: Annotated[int | None, Query(ge=limits.MIN_DIMENSION, le=limits.MAX_DIMENSION)] = None,
          num_frames: Annotated[int | None, Query(ge=1, le=limits.MAX_NUM_FRAMES)] = None,
          num_inference_steps: Annotated[int | None, Query(ge=limits.MIN_STEPS, le=limits.MAX_STEPS)] = None,
          ) -> Quote:
    """Unset size, frames and steps are the model's own (as for a submitted request)."""
    fields = GenerationFields.model_validate(
        {"prompt": prompt, "model": model, "width": width, "height": height, "num_frames": num_frames,
         "num_inference_steps": num_inference_steps}, context=gateway(request).settings.request_context())
    tokens = fields.quote()
    return Quote(tokens=tokens, standard_units=round(tokens / 100, 6), model=fields.model, width=fields.width,
                 height=fields.height, num_frames=fields.num_frames, num_inference_steps=fields.num_inference_steps)


@router.get("/v1/usage", response_model=UsageResponse, response_model_by_alias=True, responses=ERRORS,
            summary="Your usage and charges, per tier, model, day or hour")
def usage(caller: Tenant, request: Request,
          start: Annotated[datetime | None, Query(alias="from", description="Inclusive; default 30 days ago.")] = None,
          end: Annotated[datetime | None, Query(alias="to", description="Exclusive; default now.")] = None,
          group_by: Annotated[Literal["tier", "model", "day", "hour"], Query()] = "day") -> UsageResponse:
    now = datetime.now(UTC)
    start, end = start or now - timedelta(days=30), end or now + timedelta(seconds=1)
    report = gateway(request).usage(caller, start, end, group_by)
    currency = report.prices.currency

    def row(group: str, tally) -> UsageRow:
        data = tally.as_dict(currency)
        return UsageRow(group=group, amount=data["revenue"], **{k: data[k] for k in UsageRow.model_fields
                                                                 if k in data and k != "currency"},
                        currency=currency)

    return UsageResponse(tenant_id=caller.tenant_id, start=start, end=end, group_by=group_by,
                         groups=[row(group, tally) for group, tally in report.rows()],
                         total=row("total", report.total()))


@router.post("/v1/batches", status_code=201, response_model=BatchCreated, responses=ERRORS,
             summary="Submit a JSONL file of prompts as one bulk job (the raw file is the body, any content type)",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def create_batch(caller: Tenant, request: Request,
                       webhook_url: Annotated[str | None, Query(max_length=limits.WEBHOOK_URL_MAX_CHARS)] = None,
                       completion_window_s: Annotated[float, Query(ge=60, le=7 * 86400)] = 86400,
                       strict: bool = False) -> BatchCreated:
    import tempfile
    from pathlib import Path

    from starlette.concurrency import run_in_threadpool

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.jsonl"
        with open(path, "wb") as handle:  # streamed to disk: a batch file may be far larger than memory likes
            async for chunk in request.stream():
                handle.write(chunk)
        report = await run_in_threadpool(gateway(request).submit_batch, caller, path, webhook_url=webhook_url,
                                         completion_window_s=completion_window_s, strict=strict)
    return BatchCreated(batch_id=report.batch_id, accepted=report.accepted, published=report.published,
                        already_in=report.already_in, strict_refused=report.strict_refused,
                        rejected=report.rejected)


@router.get("/v1/batches/{batch_id}", response_model=BatchView, responses=ERRORS, summary="A bulk job's progress")
def get_batch(batch_id: Annotated[str, Path(pattern=limits.BATCH_ID_PATTERN)], caller: Tenant,
              request: Request) -> BatchView:
    summary = gateway(request).batch(caller, batch_id)
    submitted, done, counts = summary.submitted, summary.completed, summary.counts
    return BatchView(batch_id=batch_id, state=summary.state, accepted=submitted.accepted, rejected=submitted.rejected,
                     counts={name: getattr(counts, name) for name in BATCH_STATES},
                     submitted_at=submitted.submitted_at, deadline=submitted.deadline,
                     manifest_url=done.manifest_url if done else None, errors_key=done.errors_key if done else None)


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"service": "framebus-gateway", "status": "alive"}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Ready once its tables (statuses, tenants, batches) have caught up: any replica then answers any request."""
    ready = getattr(request.app.state, "gateway", None) is not None
    return JSONResponse({"service": "framebus-gateway", "status": "ready" if ready else "starting"},
                        status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics_text() -> Response:
    data, content_type = prometheus_text()
    return Response(data, media_type=content_type)
