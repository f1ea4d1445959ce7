"""What the worker publishes for each way a request ends: built by hand, no Kafka."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from framebus.schemas.events import (
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    StatusChanged,
    Timings,
    Usage,
)
from framebus.schemas.state import ErrorCode, RequestState, Tier
from framebus.services.generator.outcomes import (
    CANCELLED_REASON,
    RESULTS_TOPIC,
    STATUS_TOPIC,
    Cancelled,
    Completed,
    Failed,
    error_info,
    events_for,
    job_timings,
    running,
    unreadable_outcomes,
)
from tests.services.generator.fakes import EPOCH, output, request

FINISHED = EPOCH + timedelta(seconds=9)


def finished_timings(req) -> Timings:
    return job_timings(req, EPOCH, finished_at=FINISHED)


def test_a_completed_request_sends_its_result_then_its_status_with_output_and_tokens() -> None:
    req = request("r-1", batch_id="b-1", custom_id="line-1", metadata={"k": "v"}, webhook_url="https://hook.test/x")
    usage = Usage(tokens=req.quote(), gpu_seconds=1.5, steps_run=3, machine="cpu")
    result, status = events_for(Completed(req, output(req), usage, finished_timings(req)))
    assert (result.topic, status.topic) == (RESULTS_TOPIC, STATUS_TOPIC)
    assert isinstance(result.event, GenerationCompleted)
    completed = result.event
    assert (completed.request_id, completed.tenant_id, completed.batch_id, completed.custom_id) == \
        ("r-1", "acme", "b-1", "line-1")
    assert completed.metadata == {"k": "v"} and completed.webhook_url == "https://hook.test/x"
    assert completed.usage == usage and completed.output == output(req) and completed.seed == 7
    assert isinstance(status.event, StatusChanged) and status.event.state == RequestState.COMPLETED
    assert status.event.output == output(req) and status.event.tokens == req.quote()
    assert status.event.updated_at == FINISHED and status.event.batch_id == "b-1"


def test_a_failed_request_carries_its_error_and_the_usage_metering_releases() -> None:
    req = request("r-2")
    usage = Usage(tokens=req.quote(), gpu_seconds=2.0)
    error = error_info(ErrorCode.ENCODE_FAILED, "ffmpeg (libx264) failed: width not divisible by 2")
    result, status = events_for(Failed(req, error, usage, finished_timings(req)))
    assert isinstance(result.event, GenerationFailed) and result.event.error == error
    assert result.event.usage.tokens == req.quote() and result.event.usage.gpu_seconds == 2.0
    assert status.event.state == RequestState.FAILED and status.event.error == error


def test_a_cancelled_request_says_it_was_cancelled_while_running() -> None:
    req = request("r-3")
    result, status = events_for(Cancelled(req, Usage(tokens=req.quote(), gpu_seconds=0.4), finished_timings(req)))
    assert isinstance(result.event, GenerationCancelled) and result.event.reason == CANCELLED_REASON
    assert result.event.usage.gpu_seconds == 0.4
    assert status.event.state == RequestState.CANCELLED and status.event.updated_at == FINISHED


def test_running_is_stamped_with_the_job_start_and_the_time_it_queued() -> None:
    req = request("r-4")
    publish = running(req, EPOCH)
    assert publish.topic == STATUS_TOPIC and publish.event.state == RequestState.RUNNING
    assert publish.event.updated_at == EPOCH and publish.event.timings.started_at == EPOCH
    assert publish.event.timings.queued_s == 2.0


def test_queued_time_is_never_negative_when_clocks_disagree() -> None:
    req = request("r-5")
    assert job_timings(req, req.submitted_at - timedelta(seconds=5)).queued_s == 0.0


def test_error_messages_are_cut_to_fit_the_schema() -> None:
    assert len(error_info(ErrorCode.INTERNAL_ERROR, "x" * 10_000).message) == 2000


def test_an_unreadable_job_fails_each_request_it_still_names() -> None:
    value = json.dumps({"requests": [{"tenant_id": "acme", "request_id": "r-a", "tier": "interactive"},
                                     {"tenant_id": "acme", "request_id": "r-b", "tier": "no-such-tier"},
                                     {"tenant_id": 5, "request_id": "r-c"}]}).encode()
    outcomes = unreadable_outcomes(value, "`seq` is missing", FINISHED)
    assert [(o.request_id, o.tier) for o in outcomes] == [("r-a", Tier.INTERACTIVE), ("r-b", Tier.STANDARD)]
    result, status = events_for(outcomes[0])
    assert isinstance(result.event, GenerationFailed) and result.event.error.code == ErrorCode.INVALID_REQUEST
    assert result.event.error.message == "unreadable job record: `seq` is missing"
    assert result.event.timings.finished_at == FINISHED
    assert status.event.state == RequestState.FAILED and status.event.updated_at == FINISHED


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]", b"", None, b'{"requests": 3}'])
def test_a_record_that_names_no_request_fails_nothing(value) -> None:
    assert unreadable_outcomes(value, "broken", FINISHED) == []


def test_ids_too_broken_to_report_on_produce_no_events() -> None:
    [outcome] = unreadable_outcomes(json.dumps({"requests": [{"tenant_id": "", "request_id": "r"}]}).encode(),
                                    "broken", FINISHED)
    assert events_for(outcome) == []


def test_anything_but_an_outcome_is_refused() -> None:
    with pytest.raises(TypeError, match="`outcome` must be an Outcome but is str"):
        events_for("completed")
