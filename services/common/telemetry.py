"""Where a service's spans go: `FRAMEBUS_TELEMETRY` (or `--telemetry` where a command has it).

- ``auto`` (default): OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else off;
- ``otlp``: OTLP over HTTP; the standard `OTEL_*` variables (endpoint, headers, sampler,
  `OTEL_SERVICE_NAME`, resource attributes) are honoured by the SDK;
- ``console``: each span printed as it ends;
- ``jsonl:DIR``: one JSON line per span in ``DIR/<service>-<pid>.jsonl`` (tests, and an
  operator without a collector: `framebus trace` reads it);
- ``off``: nothing is recorded; a `traceparent` a producer sent still travels on.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

log = logging.getLogger(__name__)
_configured: TracerProvider | None = None


class JsonLinesExporter(SpanExporter):
    """Spans as JSON lines in a file of this process's own (appends; one writer per file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for done in spans:
                context, parent = done.get_span_context(), done.parent
                self._file.write(json.dumps({
                    "service": done.resource.attributes.get("service.name"), "name": done.name,
                    "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                    "start_ns": done.start_time, "end_ns": done.end_time, "kind": done.kind.name,
                    "attributes": dict(done.attributes or {}),
                    "links": [f"{link.context.trace_id:032x}" for link in done.links]}) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def configure(service: str, mode: str = "auto") -> TracerProvider | None:
    """Install the SDK's tracer provider for ``service`` (once per process); None when off."""
    global _configured
    if _configured is not None:
        return _configured
    if mode == "auto":
        mode = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "off"
    if mode == "off":
        return None
    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif mode.startswith("jsonl:"):
        directory = Path(mode.removeprefix("jsonl:")).expanduser()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(directory / f"{name}-{os.getpid()}.jsonl")))
    else:
        raise ValueError(f"FRAMEBUS_TELEMETRY is {mode!r}: use auto, otlp, console, jsonl:DIR or off")
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    atexit.register(provider.shutdown)  # a batch of spans still queued is sent on the way out
    _configured = provider
    log.info("telemetry: spans of %s go to %s", name, mode)
    return provider


def _instrument_libraries() -> None:
    """Spans from the official instrumentations: each S3 call (botocore: the worker's uploads, the
    tracker's manifests) and each outgoing HTTP request (httpx: webhook attempts, which then carry
    the trace's `traceparent` to the receiver). The gateway instruments its FastAPI app itself."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for instrumentor in (BotocoreInstrumentor(), HTTPXClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def read_spans(directory: Path) -> list[dict]:
    """Every span the ``jsonl:`` exporters wrote under ``directory``."""
    spans = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(json.loads(line))
    return spans
