"""One trace per request, across every Kafka hop: W3C trace context in the `traceparent` header.

Only the OpenTelemetry API is used here, so a producer that installs the SDK alone gets
propagation for free: with no tracer provider configured, spans record nothing, but a
`traceparent` the producer passes is carried on unchanged, and every framebus service that
has telemetry on continues that trace instead of starting another. Services configure the
SDK in ``framebus.services.common.telemetry``.

Each hop calls ``span(name, parent=<the record's traceparent>)`` and writes
``traceparent_of(span)`` on what it sends next. A stage whose timing is measured elsewhere
(a worker's denoising inside a batch) is recorded afterwards with ``record``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
Attributes = Mapping[str, str | int | float | bool]


_TRACER = trace.get_tracer("framebus")  # a proxy: it follows a provider configured later


def tracer() -> trace.Tracer:
    return _TRACER


def _unsampled(context: Context | None) -> Span | None:
    """The parent's span when the parent was not sampled: its children are not either (the SDK's
    default, parent-based sampling), so making them would be work for nothing. At 1% sampling this
    path is the common one: it kept the scheduler's cost per request near tracing off."""
    if context is None:
        return None
    parent = trace.get_current_span(context)
    return parent if not parent.get_span_context().trace_flags.sampled else None


def unsampled(traceparent: str | None) -> bool:
    """Whether ``traceparent`` names a parent that was not sampled, read from its flags without
    parsing the rest: its children are not sampled either (the SDK's default, parent-based
    sampling), so they are not made at all. At 1% sampling this is the common case."""
    return traceparent is not None and len(traceparent) == 55 and not int(traceparent[-2:], 16) & 1


def context_of(traceparent: str | None) -> Context | None:
    """The context a `traceparent` names (None: none given, or not a valid one)."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


# Calls that belong to no trace (S3 uploads, HTTP) run with the official instrumentations switched
# off (OpenTelemetry's suppression key, which every instrumentation checks first): they record
# nothing, cost nothing, and send no `traceparent` of their own, instead of each starting a trace.
_UNTRACED = context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True, Context())


@contextmanager
def within(traceparent: str | None) -> Iterator[None]:
    """Run a block as part of ``traceparent``'s trace: what instrumented libraries (botocore,
    httpx) do in it becomes spans of that trace; with no trace given, or one not sampled, they
    record nothing."""
    token = context.attach(_UNTRACED if traceparent is None or unsampled(traceparent)
                           else context_of(traceparent) or _UNTRACED)
    try:
        yield
    finally:
        context.detach(token)


def traceparent_of(span: Span, fallback: str | None = None) -> str | None:
    """``span``'s W3C `traceparent`, to put on the next record. A span that records nothing (no
    SDK configured) has no context of its own: the parent's `traceparent` travels on."""
    if not span.get_span_context().is_valid:
        return fallback
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", fallback)


@contextmanager
def span(name: str, *, parent: str | None = None, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Attributes | None = None, links: tuple[str | None, ...] = (),
         root: bool = True) -> Iterator[Span]:
    """A span that is a child of ``parent`` (a `traceparent`), or a new trace's root without one
    (``root=False``: no span then; a hop in the middle of a request's path starts no trace)."""
    # No span of ours in these cases, and none from instrumented libraries (httpx, botocore)
    # under it either: the block runs under a parent that is never sampled.
    if parent is None and not root:
        with within(None):
            yield trace.INVALID_SPAN
        return
    if unsampled(parent):
        with within(None):
            yield trace.NonRecordingSpan(trace.get_current_span(context_of(parent)).get_span_context())
        return
    context = context_of(parent)
    skipped = _unsampled(context)
    if skipped is not None:
        with within(None):
            yield skipped
        return
    linked = [Link(ctx) for tp in links if (ctx := _span_context(tp)) is not None] if links else None
    with tracer().start_as_current_span(name, context=context or Context(), kind=kind,
                                        attributes=attributes, links=linked) as current:
        yield current


def start(name: str, *, parent: str | None = None, kind: SpanKind = SpanKind.INTERNAL,
          attributes: Attributes | None = None) -> Span:
    """A span the caller ends (``span.end()``): for a send whose acknowledgement comes later."""
    context = context_of(parent)
    skipped = _unsampled(context)
    if skipped is not None:
        return trace.NonRecordingSpan(skipped.get_span_context())
    return tracer().start_span(name, context=context or Context(), kind=kind, attributes=attributes)


def record(name: str, *, parent: str | None, start: datetime | float, end: datetime | float,
           attributes: Attributes | None = None, kind: SpanKind = SpanKind.INTERNAL) -> str | None:
    """A span for a stage that already happened (times as datetimes or epoch seconds); returns its
    `traceparent` so later stages can hang under it."""
    if unsampled(parent):
        return parent
    context = context_of(parent)
    if _unsampled(context) is not None:
        return parent
    started = tracer().start_span(name, context=context or Context(), kind=kind, attributes=attributes,
                                  start_time=_ns(start))
    started.end(end_time=_ns(end))
    return traceparent_of(started, parent)


def _ns(at: datetime | float) -> int:
    return int((at.timestamp() if isinstance(at, datetime) else at) * 1e9)


def _span_context(traceparent: str | None):
    context = context_of(traceparent)
    return trace.get_current_span(context).get_span_context() if context is not None else None
