"""Every metric framebus exports, in one place, and how a service exposes them.

The instruments are made here from the OpenTelemetry API, so the services record without
knowing where figures go; they cost next to nothing until ``configure_metrics`` installs the
SDK (every service does at start). Each service then answers GET /metrics with Prometheus
text (``prometheus_text``), and pushes OTLP as well when `FRAMEBUS_TELEMETRY` selects it.

Names follow OpenTelemetry; Prometheus sees them with dots as underscores, the unit appended
and ``_total`` on counters (``framebus.queue.wait`` in seconds -> ``framebus_queue_wait_seconds``).
Ratios an operator wants (cache skip ratio, webhook failure ratio) are two counters to divide,
so they stay right over any window; README "Metrics" gives the PromQL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

# Seconds, from a queue hop to an overnight batch's wait.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

meter = metrics.get_meter("framebus")

# --- every processor (processor.py) --------------------------------------------------------
records_handled = meter.create_counter(
    "framebus.records.handled", unit="{record}", description="Input records a processor handled, by processor and lane.")
transactions = meter.create_counter(
    "framebus.transactions", unit="{transaction}",
    description="Kafka transactions a transactional processor committed (each costs the broker several requests and markers).")
dead_letters = meter.create_counter(
    "framebus.dead_letters", unit="{record}",
    description="Records refused to a rejected or dead-letter topic, by topic and reason (the error code).")

# --- scheduler -------------------------------------------------------------------------------
admissions = meter.create_counter(
    "framebus.admissions", unit="{request}",
    description="Admission decisions, by tier and decision (queued, duplicate, or the refusal's error code).")
queue_wait = meter.create_histogram(
    "framebus.queue.wait", unit="s", description="Accepted to dispatched, per dispatch, by tier.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S)

# --- generator workers -----------------------------------------------------------------------
batch_size = meter.create_histogram(
    "framebus.batch.size", unit="{request}", description="Requests per batch a worker ran, by model.",
    explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS)
batch_fill = meter.create_histogram(
    "framebus.batch.fill", unit="1", description="Batch size over the worker's largest batch for that shape, by model.",
    explicit_bucket_boundaries_advisory=RATIO_BUCKETS)
worker_busy = meter.create_counter(
    "framebus.worker.busy", unit="s", description="Seconds a worker spent running batches (rate() of it is the busy ratio).")
denoise_steps = meter.create_counter(
    "framebus.denoise.steps", unit="{step}",
    description="Denoising steps by outcome: run, or skipped by the step cache (skipped / all is the cache skip ratio).")
stage_time = meter.create_histogram(
    "framebus.stage.duration", unit="s", description="Time per request in each stage a worker runs (text encode, denoise, decode, encode, upload).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S)

# --- metering ----------------------------------------------------------------------------------
tokens_settled = meter.create_counter(
    "framebus.tokens.settled", unit="{token}", description="Tokens charged per tenant and tier when results settle.")
request_duration = meter.create_histogram(
    "framebus.request.duration", unit="s",
    description="End to end, accepted to finished, per settled result, by tier and outcome.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S)

# --- notifier ----------------------------------------------------------------------------------
webhook_attempts = meter.create_counter(
    "framebus.webhook.attempts", unit="{attempt}",
    description="Webhook delivery attempts by kind (request, batch) and outcome (delivered, retry, dead, disabled, refused).")

# --- observed when scraped ---------------------------------------------------------------------
# A gauge's value is read from the live service at collection time: the service registers a
# source (a function returning (value, attributes) pairs) with ``observe``.
Source = Callable[[], Iterable[tuple[float, dict[str, str]]]]
_sources: dict[str, list[Source]] = {}
_sources_lock = threading.Lock()


def observe(gauge: str, source: Source) -> Callable[[], None]:
    """Read ``gauge`` from ``source`` at each collection, until the returned function is called."""
    if gauge not in GAUGES:
        raise ValueError(f"{gauge!r} is not one of framebus's gauges: {sorted(GAUGES)}")
    with _sources_lock:
        _sources.setdefault(gauge, []).append(source)

    def forget() -> None:
        with _sources_lock:
            if source in _sources.get(gauge, []):
                _sources[gauge].remove(source)
    return forget


def _observer(gauge: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:  # noqa: ARG001 - the SDK's signature
        with _sources_lock:
            sources = list(_sources.get(gauge, ()))
        for source in sources:
            try:
                found = list(source())
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail for one source
                log.debug("metric source of %s failed: %r", gauge, exc)
                continue
            for value, attributes in found:
                yield Observation(value, attributes)
    return read


GAUGES = {
    "framebus.consumer.lag": ("{record}", "Records on a processor's input not yet handled, by group and topic (a tier's request topic is its backlog at the broker)."),
    "framebus.queue.depth": ("{request}", "Requests the scheduler holds queued, by tier."),
    "framebus.queue.oldest_wait": ("s", "How long the longest-queued request of each tier has waited (what KEDA scales on, with the depth)."),
    "framebus.requests.in_flight": ("{request}", "Requests dispatched to workers and not yet finished, as the scheduler sees them."),
    "framebus.workers.live": ("{worker}", "Workers the scheduler hears heartbeats from."),
    "framebus.worker.ready": ("1", "1 once the worker is warm (its model loaded and compiled)."),
    "framebus.batches.open": ("{batch}", "Overnight batches the tracker follows that have not ended."),
}
for _name, (_unit, _description) in GAUGES.items():
    meter.create_observable_gauge(_name, callbacks=[_observer(_name)], unit=_unit, description=_description)


# --- installing the SDK ------------------------------------------------------------------------
_installed = False


def configure_metrics(service: str, mode: str = "auto") -> None:
    """Install the SDK's meter provider for ``service`` (once per process): Prometheus text for
    /metrics always; OTLP too when ``mode`` (FRAMEBUS_TELEMETRY) is otlp, or auto with an endpoint."""
    global _installed
    if _installed:
        return
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    readers = [PrometheusMetricReader()]
    if mode == "otlp" or (mode == "auto" and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    name = os.environ.get("OTEL_SERVICE_NAME", service)
    metrics.set_meter_provider(MeterProvider(resource=Resource.create({"service.name": name}), metric_readers=readers))
    _installed = True


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics as Prometheus text, and its content type (for GET /metrics)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
