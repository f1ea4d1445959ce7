"""The framebus producer SDK: submit generation requests to Kafka and follow them.

    from framebus.client import FramebusClient

    with FramebusClient(tenant_id="acme") as client:          # FRAMEBUS_* settings apply
        receipt = client.submit({"request_id": "order-42", "prompt": "a red fox in snow",
                                 "tier": "interactive", "num_frames": 17})
        print(receipt.tokens, client.status("order-42"))

Contract:
- ``submit`` validates first (``pydantic.ValidationError`` naming each bad field; nothing
  invalid is sent), then returns only after the broker acknowledged the record
  (``acks=all``, idempotent producer, key = tenant id). If the broker cannot be reached
  or does not acknowledge within ``submit_deadline_s`` (retries included) it raises
  ``SubmitError``; it never reports success it did not get.
- The ``request_id`` is the idempotency key: submitting it again is safe; the scheduler
  runs each (tenant, request_id) once.
- ``status`` reads the compacted status topic: the furthest state the pipeline published (states only move forward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from kafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict

from framebus import kafka as kafka_adapter
from framebus import tracing
from framebus.config import ClientSettings
from framebus.errors import SubmitError
from framebus.kafka import read_key
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.events import (
    CancelRequested,
    GenerationRequest,
    StatusChanged,
    furthest,
    status_key,
    utc_now,
)
from framebus.schemas.state import RequestState, Tier
from framebus.schemas.topics import request_topic

log = logging.getLogger(__name__)
SDK_SOURCE = "/framebus/sdk"


class Receipt(BaseModel):
    """Proof that framebus accepted a request: where the record sits and what it will cost."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    tenant_id: str
    tier: Tier
    state: RequestState = RequestState.ACCEPTED
    tokens: float
    topic: str
    partition: int
    offset: int
    event_id: str
    accepted_at: datetime


class FramebusClient:
    def __init__(self, *, tenant_id: str | None = None, settings: ClientSettings | None = None,
                 source: str = SDK_SOURCE, on_accepted: Callable[[StatusChanged], None] | None = None) -> None:
        """``on_accepted`` sees each ``accepted`` status as it is published (the gateway's own table uses it)."""
        self.settings = settings or ClientSettings()
        self.on_accepted = on_accepted
        self.tenant_id = tenant_id or self.settings.tenant
        self.source = source
        deadline_ms = int(self.settings.submit_deadline_s * 1000)
        self._producer = kafka_adapter.producer(
            self.settings.bootstrap_servers, delivery_timeout_ms=deadline_ms, max_block_ms=deadline_ms,
            request_timeout_ms=min(deadline_ms, 10000), linger_ms=0, bootstrap_timeout_ms=deadline_ms)

    # --- requests ---------------------------------------------------------------------
    def build_request(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationRequest:
        """Validate a request (a mapping, or a model to re-check); the client's tenant fills in a missing tenant_id."""
        if isinstance(request, GenerationRequest):
            request = request.model_dump()
        fields = {"tenant_id": self.tenant_id, **request}
        return GenerationRequest.model_validate(fields, context=self.settings.request_context())

    def submit(self, request: GenerationRequest | Mapping[str, Any], *, traceparent: str | None = None) -> Receipt:
        return self.submit_many([request], traceparent=traceparent)[0]

    def submit_many(self, requests: Iterable[GenerationRequest | Mapping[str, Any]], *,
                    traceparent: str | None = None) -> list[Receipt]:
        """Validate all, then send all and wait for every acknowledgement (pipelined).

        All requests are validated before any is sent. If any record is not acknowledged
        the call raises SubmitError naming it; the ones before it may have been accepted.
        """
        built = [self.build_request(r) for r in requests]
        pending = []
        for request in built:
            topic = self.settings.topic(request_topic(request.tier))
            # The request's trace starts here (or continues the caller's): each hop after this hangs under it.
            sent = tracing.start("publish", parent=traceparent, kind=SpanKind.PRODUCER, attributes={
                "messaging.system": "kafka", "messaging.destination.name": topic, "framebus.tenant": request.tenant_id,
                "framebus.request_id": request.request_id, "framebus.tier": request.tier.value})
            record = encode_event(request, source=self.source, traceparent=tracing.traceparent_of(sent, traceparent))
            event_id = dict(record.headers)["ce_id"].decode()
            try:
                future = self._producer.send(topic, key=record.key, value=record.value, headers=record.headers)
            except KafkaError as exc:
                sent.end()
                raise SubmitError(f"request {request.request_id!r} was not sent: {exc}") from exc
            pending.append((request, topic, event_id, future, sent))
        receipts = []
        for request, topic, event_id, future, sent in pending:
            try:
                metadata = future.get(timeout=self.settings.submit_deadline_s)
            except KafkaError as exc:
                raise SubmitError(f"request {request.request_id!r} was not acknowledged by Kafka within "
                                  f"{self.settings.submit_deadline_s:g}s: {exc}") from exc
            finally:
                sent.end()
            receipts.append(Receipt(request_id=request.request_id, tenant_id=request.tenant_id, tier=request.tier,
                                    tokens=request.quote(), topic=topic, partition=metadata.partition,
                                    offset=metadata.offset, event_id=event_id, accepted_at=utc_now()))
        self._publish_accepted(built, receipts, traceparent)
        return receipts

    def _publish_accepted(self, requests: list[GenerationRequest], receipts: list[Receipt],
                          traceparent: str | None) -> None:
        """Record ``accepted`` on the status topic without waiting for its acknowledgement.

        The request itself is already acknowledged, so this costs the caller no second
        round trip; a failure here is logged, and ``status`` flushes before it reads.
        """
        for request, receipt in zip(requests, receipts, strict=True):
            status = accepted_status(request, receipt)
            if self.on_accepted is not None:
                self.on_accepted(status)
            try:
                future = self.publish(status, "framebus.status", traceparent=traceparent)
            except KafkaError:
                log.warning("request %s was accepted but its status was not sent", request.request_id, exc_info=True)
                continue
            future.add_errback(lambda exc, rid=request.request_id: log.warning(
                "request %s was accepted but its status was not recorded: %s", rid, exc))

    def publish(self, event, topic: str, *, traceparent: str | None = None):
        """Send any contract event to a catalogue topic; returns the send future."""
        record = encode_event(event, source=self.source, traceparent=traceparent)
        return self._producer.send(self.settings.topic(topic), key=record.key, value=record.value,
                                   headers=record.headers)

    # --- follow-ups ---------------------------------------------------------------------
    def cancel(self, request_id: str, *, reason: str = "cancelled by the client",
               tenant_id: str | None = None) -> CancelRequested:
        """Ask the pipeline to cancel; returns once the broker acknowledged the cancel."""
        event = CancelRequested(request_id=request_id, tenant_id=tenant_id or self.tenant_id, reason=reason)
        try:
            self.publish(event, "framebus.control").get(timeout=self.settings.submit_deadline_s)
        except KafkaError as exc:
            raise SubmitError(f"cancel of {request_id!r} was not acknowledged by Kafka: {exc}") from exc
        return event

    def status(self, request_id: str, *, timeout_s: float = 10.0) -> StatusChanged | None:
        """The latest published status of one of this tenant's requests, or None if unknown."""
        try:
            self._producer.flush(timeout=timeout_s)  # read our own writes
        except KafkaError as exc:
            log.warning("pending status records were not flushed before reading: %s", exc)
        records = read_key(self.settings.bootstrap_servers, self.settings.topic("framebus.status"),
                           status_key(self.tenant_id, request_id), timeout_s=timeout_s)
        # States only move forward for the reader: a late `accepted` never hides `queued`, and
        # the first terminal record is the request's one result.
        kept: StatusChanged | None = None
        for record in records:
            event = decode_event(record.headers, record.value).event
            if isinstance(event, StatusChanged):
                kept = furthest(kept, event)
        return kept

    def quote(self, request: GenerationRequest | Mapping[str, Any]) -> float:
        return self.build_request(request).quote()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything sent so far is acknowledged (or the deadline passes)."""
        self._producer.flush(timeout=timeout_s or self.settings.submit_deadline_s)

    def close(self) -> None:
        """Flush what is pending (status records) for up to 5 s, then close; never raises for Kafka."""
        try:
            self._producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("closing the producer left records undelivered: %s", exc)

    def __enter__(self) -> FramebusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def accepted_status(request: GenerationRequest, receipt: Receipt) -> StatusChanged:
    return StatusChanged(
        request_id=request.request_id, tenant_id=request.tenant_id, state=RequestState.ACCEPTED, tier=request.tier,
        request_digest=request.digest(), tokens=receipt.tokens, batch_id=request.batch_id,
        request_topic=receipt.topic, request_partition=receipt.partition, request_offset=receipt.offset,
        request_event_id=receipt.event_id, timings={"accepted_at": receipt.accepted_at})


def receipt_from_status(status: StatusChanged) -> Receipt:
    """The receipt originally returned for the request ``status`` describes."""
    return Receipt(request_id=status.request_id, tenant_id=status.tenant_id, tier=status.tier,
                   tokens=status.tokens or 0.0, topic=status.request_topic or "", partition=status.request_partition or 0,
                   offset=status.request_offset or 0, event_id=status.request_event_id or "",
                   accepted_at=status.timings.accepted_at or status.updated_at)
