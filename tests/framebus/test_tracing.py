"""Trace context without a collector: a producer's traceparent travels on, and `framebus trace`
draws a waterfall from spans or, failing those, from a status's timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from framebus import tracing
from framebus.schemas.events import StatusChanged, Timings
from framebus.schemas.state import RequestState
from framebus.services.cli.trace import steps_from_spans, steps_from_status

GIVEN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_with_no_sdk_configured_a_producers_traceparent_travels_on_unchanged():
    with tracing.span("admit", parent=GIVEN) as span:
        assert tracing.traceparent_of(span, GIVEN) == GIVEN
    assert tracing.record("queue wait", parent=GIVEN, start=1.0, end=2.0) == GIVEN
    assert tracing.context_of("not-a-traceparent") is None and tracing.context_of(None) is None
    with tracing.span("admit") as root:  # nothing given, nothing recorded: no header to write
        assert tracing.traceparent_of(root) is None


def test_a_status_alone_gives_the_hops_and_the_workers_stages():
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    status = StatusChanged(request_id="r1", tenant_id="acme", tier="standard", state=RequestState.COMPLETED,
                           timings=Timings(accepted_at=at, queued_at=at + timedelta(milliseconds=5),
                                           started_at=at + timedelta(seconds=2), text_encode_s=0.5, denoise_s=2.5,
                                           decode_s=0.5,
                                           encode_s=0.25, upload_s=0.25, finished_at=at + timedelta(seconds=6)))
    steps = [(s.name, s.depth, round(s.end - s.start, 3)) for s in steps_from_status(status)]
    assert steps == [("admission", 0, 0.005), ("queue wait", 0, 1.995), ("on the worker", 0, 4.0),
                     ("text encode", 1, 0.5), ("denoise", 1, 2.5), ("vae decode", 1, 0.5), ("encode", 1, 0.25), ("upload", 1, 0.25)]


def test_spans_become_a_tree_in_start_order_for_the_requests_trace_only():
    def span(name, span_id, parent, start, trace="t1", **attributes):
        return {"name": name, "span_id": span_id, "parent_id": parent, "trace_id": trace, "service": "s",
                "start_ns": start * 10**9, "end_ns": (start + 1) * 10**9, "attributes": attributes}

    spans = [span("settle", "c", "b", 5), span("admit", "a", "producer", 1, **{"framebus.request_id": "r1"}),
             span("batch", "b", "a", 3), span("queue wait", "q", "a", 1.5), span("other", "x", None, 0, trace="t2")]
    assert [(s.name, s.depth) for s in steps_from_spans(spans, "r1")] == [
        ("admit [s]", 0), ("queue wait [s]", 1), ("batch [s]", 1), ("settle [s]", 2)]
    assert steps_from_spans(spans, "unknown") == []


def test_children_of_an_unsampled_parent_are_not_made_and_the_parent_travels_on():
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    assert tracing.record("dispatch", parent=unsampled, start=1.0, end=1.0) == unsampled
    with tracing.span("admit", parent=unsampled) as span:
        assert not span.is_recording() and tracing.traceparent_of(span) == unsampled


def test_a_hop_in_the_middle_of_a_path_starts_no_trace_of_its_own():
    with tracing.span("settle", parent=None, root=False) as span:
        assert not span.is_recording() and tracing.traceparent_of(span) is None
