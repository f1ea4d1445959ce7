"""How a request ends on the worker, and the events each ending produces.

Every request of every job ends in exactly one ``Outcome``. ``events_for(outcome)`` is the
one place that says what the worker publishes for it: the result on framebus.results
first, then the request's status on framebus.status, both stamped with the outcome's
finish time. Nothing here reads a clock or talks to Kafka: the caller passes the times
in and sends what comes back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from framebus import tracing
from framebus.schemas.events import (
    ErrorInfo,
    Event,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    GenerationRequest,
    Output,
    StatusChanged,
    Timings,
    Usage,
)
from framebus.schemas.state import ErrorCode, RequestState, Tier
from framebus.services.common import metrics

RESULTS_TOPIC = "framebus.results"
STATUS_TOPIC = "framebus.status"
CANCELLED_REASON = "cancelled while running"
ERROR_MESSAGE_MAX_CHARS = 2000  # ErrorInfo allows 2048; the rest is headroom


@dataclass(frozen=True)
class Completed:
    request: GenerationRequest
    output: Output
    usage: Usage
    timings: Timings  # finished_at is set


@dataclass(frozen=True)
class Failed:
    request: GenerationRequest
    error: ErrorInfo
    usage: Usage  # the quoted tokens, which metering releases, and any engine time spent
    timings: Timings  # finished_at is set


@dataclass(frozen=True)
class Cancelled:
    request: GenerationRequest
    usage: Usage  # the engine time spent before the cancel took effect
    timings: Timings  # finished_at is set


@dataclass(frozen=True)
class Unreadable:
    """A request named by a job record the worker could not read: failed with the little that is known."""

    tenant_id: str
    request_id: str
    tier: Tier
    error: ErrorInfo
    finished_at: datetime


Outcome = Completed | Failed | Cancelled | Unreadable


@dataclass(frozen=True)
class Publish:
    """One event to send, the catalogue name of the topic it goes to, and the request's trace."""

    topic: str
    event: Event
    traceparent: str | None = None


def error_info(code: ErrorCode, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, message=message[:ERROR_MESSAGE_MAX_CHARS])


def job_timings(request: GenerationRequest, started: datetime, **stages) -> Timings:
    """Stage timings of one request; queued is submission to the worker starting its job."""
    queued = max(0.0, (started - request.submitted_at).total_seconds())
    return Timings(accepted_at=request.submitted_at, started_at=started, queued_s=queued, **stages)


def status(request: GenerationRequest, state: RequestState, timings: Timings, updated_at: datetime,
           **fields) -> Publish:
    """The request's status record; ``fields`` are StatusChanged's optional ones (output, error, tokens)."""
    return Publish(STATUS_TOPIC, StatusChanged(request_id=request.request_id, tenant_id=request.tenant_id,
                                               state=state, tier=request.tier, batch_id=request.batch_id,
                                               timings=timings, updated_at=updated_at,
                                               request_digest=digest_of(request), **fields))


def digest_of(request: GenerationRequest) -> str:
    """The request's digest (each status carries it, so a replay is recognised in any state), computed
    once per request: a job's statuses (running, then the outcome) share it."""
    key = (request.tenant_id, request.request_id)
    digest = _DIGESTS.get(key)
    if digest is None:
        if len(_DIGESTS) > 4096:  # only the requests of the jobs at hand are needed
            _DIGESTS.clear()
        digest = _DIGESTS[key] = request.digest()
    return digest


_DIGESTS: dict[tuple[str, str], str] = {}


def running(request: GenerationRequest, started: datetime) -> Publish:
    """The status a request takes when the worker starts its job."""
    return status(request, RequestState.RUNNING, job_timings(request, started), started)


def events_for(outcome: Outcome) -> list[Publish]:
    """The result, then the status, for a finished request. An ``Unreadable`` whose ids do not
    validate produces nothing: the dead-lettered record is all that is left of it."""
    match outcome:
        case Completed(request=request, output=output, usage=usage, timings=timings):
            result = GenerationCompleted(**request.result_fields(timings), output=output, usage=usage,
                                         seed=request.effective_seed())
            return [Publish(RESULTS_TOPIC, result), status(request, RequestState.COMPLETED, timings,
                                                           timings.finished_at, output=output, tokens=usage.tokens)]
        case Failed(request=request, error=error, usage=usage, timings=timings):
            result = GenerationFailed(**request.result_fields(timings), error=error, usage=usage)
            return [Publish(RESULTS_TOPIC, result),
                    status(request, RequestState.FAILED, timings, timings.finished_at, error=error)]
        case Cancelled(request=request, usage=usage, timings=timings):
            result = GenerationCancelled(**request.result_fields(timings), reason=CANCELLED_REASON, usage=usage)
            return [Publish(RESULTS_TOPIC, result),
                    status(request, RequestState.CANCELLED, timings, timings.finished_at)]
        case Unreadable():
            return _unreadable_events(outcome)
    raise TypeError(f"`outcome` must be an Outcome but is {type(outcome).__name__}")


def unreadable_outcomes(value: bytes | None, detail: str, finished_at: datetime) -> list[Unreadable]:
    """One failure per request an unreadable job record still names (best effort: tenant,
    request id and tier read from raw JSON); none when the record is not even JSON."""
    error = error_info(ErrorCode.INVALID_REQUEST, f"unreadable job record: {detail}")
    try:
        entries = json.loads(value or b"").get("requests", [])
        named = []
        for entry in entries:
            tier = entry.get("tier") if entry.get("tier") in {t.value for t in Tier} else Tier.STANDARD
            if isinstance(entry.get("tenant_id"), str) and isinstance(entry.get("request_id"), str):
                named.append(Unreadable(entry["tenant_id"], entry["request_id"], Tier(tier), error, finished_at))
        return named
    except (ValueError, AttributeError, TypeError):
        return []


def _unreadable_events(outcome: Unreadable) -> list[Publish]:
    timings = Timings(finished_at=outcome.finished_at)
    ids = {"request_id": outcome.request_id, "tenant_id": outcome.tenant_id, "tier": outcome.tier}
    try:
        return [Publish(RESULTS_TOPIC, GenerationFailed(**ids, error=outcome.error, timings=timings)),
                Publish(STATUS_TOPIC, StatusChanged(**ids, state=RequestState.FAILED, error=outcome.error,
                                                    timings=timings, updated_at=outcome.finished_at))]
    except ValidationError:  # ids too broken to report on; the dead letter keeps the record
        return []


def measure_outcome(outcome: Outcome, model: str) -> None:
    """The request's steps (run, or skipped by the cache) and stage times, as metrics."""
    if isinstance(outcome, Unreadable) or outcome.usage.result_cache_hit:
        return
    usage, timings = outcome.usage, outcome.timings
    metrics.denoise_steps.add(usage.steps_run, {"model": model, "outcome": "run"})
    metrics.denoise_steps.add(usage.steps_skipped_by_cache, {"model": model, "outcome": "skipped"})
    for stage, seconds in (("text encode", timings.text_encode_s), ("denoise", timings.denoise_s), ("decode", timings.decode_s),
                           ("encode", timings.encode_s), ("upload", timings.upload_s)):
        if seconds is not None:
            metrics.stage_time.record(seconds, {"model": model, "stage": stage})


def trace_outcome(outcome: Outcome, parent: str | None, *, job_id: str, worker_id: str, batch_size: int,
                  shape: str) -> str | None:
    """The request's spans on this worker, from the times its stages measured: its time in the
    batch, and within it denoising, VAE decode, encode and upload, one after another. Returns the
    batch span's traceparent, which its result carries on (None: no trace to continue)."""
    if parent is None or isinstance(outcome, Unreadable) or outcome.timings.started_at is None:
        return parent
    timings, usage = outcome.timings, outcome.usage
    started = timings.started_at.timestamp()
    finished = timings.finished_at.timestamp() if timings.finished_at else started
    outcome_name = {Completed: "completed", Failed: "failed", Cancelled: "cancelled"}[type(outcome)]
    batch = tracing.record("batch", parent=parent, start=started, end=finished, attributes={
        "framebus.request_id": outcome.request.request_id, "framebus.job": job_id, "framebus.worker": worker_id,
        "framebus.batch_size": batch_size, "framebus.shape": shape, "framebus.outcome": outcome_name,
        "framebus.result_cache_hit": usage.result_cache_hit})
    at = started
    for stage, seconds, attributes in (
            ("text encode", timings.text_encode_s, {}),
            ("denoise", timings.denoise_s, {"framebus.steps_run": usage.steps_run,
                                            "framebus.steps_skipped_by_cache": usage.steps_skipped_by_cache}),
            ("vae decode", timings.decode_s, {}), ("encode", timings.encode_s, {}), ("upload", timings.upload_s, {})):
        if seconds is None:
            continue
        tracing.record(stage, parent=batch, start=at, end=at + seconds, attributes=attributes)
        at += seconds
    return batch
