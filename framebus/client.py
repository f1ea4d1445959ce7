"""The framebus SDK: submit generations, follow them, wait for them; over HTTP or straight to Kafka.

    from framebus.client import FramebusClient

    # Applications: the gateway, with the tenant's API key.
    with FramebusClient(base_url="https://framebus.example.com", api_key="fb_...") as client:
        result = client.run({"prompt": "a red circle moving left on a white background"}, timeout=300)
        client.download(result, "clip.mp4")

    # Systems that publish events: Kafka (FRAMEBUS_* settings apply).
    with FramebusClient(tenant_id="acme") as client:
        handle = client.submit({"request_id": "order-42", "prompt": "a red fox in snow", "tier": "interactive"})
        for item in handle.events():            # status, progress (denoising step/steps, encoding, uploading)
            print(item.kind, item.data)         # ... ending with completed, failed or cancelled

``AsyncFramebusClient`` is the same with ``await``. Both transports answer with the same
types (``Receipt``-shaped handles, ``GenerationStatus``, ``StreamItem``) and raise the same
errors (``framebus.errors``).

Contract:
- ``submit`` returns only once the request is accepted: over Kafka after the broker
  acknowledged the record (``acks=all``, idempotent producer, key = tenant id; validated first,
  ``pydantic.ValidationError`` naming each bad field, nothing invalid is sent), over HTTP after
  the gateway answered 201. A broker that does not acknowledge within ``submit_deadline_s``
  raises ``SubmitError``; it never reports success it did not get.
- The ``request_id`` is the idempotency key: submitting it again is safe; the scheduler runs
  each (tenant, request_id) once. Over HTTP the client picks one when the caller did not, so
  its own retries (connection errors, 429, 502-504, with backoff) never submit twice.
- ``status`` costs no scan per call: over HTTP one GET; over Kafka one follower per client
  reads a status partition once and keeps following it (``framebus.follower``).
- ``wait`` and ``events`` follow the request until its terminal state or the timeout
  (``WaitTimeout``; the generation goes on).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from kafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr

from framebus import kafka as kafka_adapter
from framebus import tracing
from framebus.config import ClientSettings
from framebus.errors import ConfigurationError, NotFoundError, SubmitError, WaitTimeout
from framebus.follower import StatusFollower
from framebus.http import AsyncHttpTransport, HttpTransport, new_request_id
from framebus.results import GenerationStatus, StreamItem, StreamOrder, shown
from framebus.schemas.codec import encode_event
from framebus.schemas.events import CancelRequested, GenerationRequest, StatusChanged, utc_now
from framebus.schemas.state import RequestState, Tier
from framebus.schemas.topics import request_topic
from framebus.signing import key_bytes, signed_for

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


class KafkaTransport:
    """Kafka: requests to the tier topics, status and progress from the follower."""

    def __init__(self, *, tenant_id: str | None = None, settings: ClientSettings | None = None,
                 source: str = SDK_SOURCE, on_accepted: Callable[[StatusChanged], None] | None = None,
                 signing_key: str | None = None) -> None:
        """``on_accepted`` sees each ``accepted`` status as it is published (the gateway's own table uses it).
        ``signing_key``: the tenant's key (else FRAMEBUS_SIGNING_KEY): requests and cancels are signed with it."""
        self.settings = settings or ClientSettings()
        if signing_key is not None:
            self.settings = self.settings.model_copy(update={"signing_key": SecretStr(signing_key)})
            key_bytes(signing_key)  # a malformed key fails here, not at the scheduler
        self.on_accepted = on_accepted
        self.tenant_id = tenant_id or self.settings.tenant
        self.source = source
        self._follower: StatusFollower | None = None
        self._key = self.settings.publishing_key  # requests and cancels are signed with it (framebus.signing)
        deadline_ms = int(self.settings.submit_deadline_s * 1000)
        self._producer = kafka_adapter.producer(
            self.settings.bootstrap_servers, delivery_timeout_ms=deadline_ms, max_block_ms=deadline_ms,
            request_timeout_ms=min(deadline_ms, 10000), linger_ms=0, bootstrap_timeout_ms=deadline_ms)

    # --- requests ---------------------------------------------------------------------
    def build_request(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationRequest:
        """Validate a request (a mapping, or a model to re-check); the client's tenant fills in a missing
        tenant_id, a fresh id a missing request_id."""
        if isinstance(request, GenerationRequest):
            request = request.model_dump()
        # An id is the idempotency key; a caller without one gets a fresh one (as over HTTP).
        fields = {"tenant_id": self.tenant_id, "request_id": new_request_id(), **request}
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
            record = signed_for(request_topic(request.tier), encode_event(
                request, source=self.source, traceparent=tracing.traceparent_of(sent, traceparent)), self._key)
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
            if self._follower is not None:
                self._follower.apply(status)
            if self.settings.signing_key is not None:
                continue  # a tenant's producer writes requests and cancels only; the scheduler records the rest
            try:
                future = self.publish(status, "framebus.status", traceparent=traceparent)
            except KafkaError:
                log.warning("request %s was accepted but its status was not sent", request.request_id, exc_info=True)
                continue
            future.add_errback(lambda exc, rid=request.request_id: log.warning(
                "request %s was accepted but its status was not recorded: %s", rid, exc))

    def publish(self, event, topic: str, *, traceparent: str | None = None):
        """Send any contract event to a catalogue topic; returns the send future."""
        record = signed_for(topic, encode_event(event, source=self.source, traceparent=traceparent), self._key)
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

    @property
    def follower(self) -> StatusFollower:
        """The one reader of this tenant's statuses and progress, started on first use."""
        if self.settings.signing_key is not None and self.settings.kafka_security_protocol.startswith("SASL"):
            # On a bus with ACLs a tenant's producer reads nothing all tenants share (README, Security).
            raise ConfigurationError("a tenant's Kafka producer may not read framebus.status: follow its requests "
                                     "through their webhooks, or through the gateway (FramebusClient(base_url=..., "
                                     "api_key=...)), which shows each tenant only its own")
        if self._follower is None:
            self._follower = StatusFollower(self.settings.bootstrap_servers, self.settings.topic("framebus.status"),
                                            self.settings.topic("framebus.progress"), self.tenant_id,
                                            since_s=self.settings.status_retention_days * 86400.0)
        return self._follower

    def status(self, request_id: str, *, timeout_s: float = 10.0) -> GenerationStatus | None:
        """The furthest published status of one of this tenant's requests, or None if unknown."""
        found = self.follower.status(request_id, timeout_s=timeout_s)
        return GenerationStatus.from_status(found) if found is not None else None

    def events(self, request_id: str, deadline: float) -> Iterator[StreamItem]:
        """The request's current status, then each change and progress line until its terminal state."""
        arrived: queue.Queue = queue.Queue()
        stop = self.follower.listen(request_id, arrived.put, timeout_s=max(1.0, deadline - time.monotonic()))
        try:
            current = self.follower.status(request_id, timeout_s=max(1.0, deadline - time.monotonic()))
            if current is None:
                raise NotFoundError(f"no generation {request_id!r} for tenant {self.tenant_id!r}")
            order = StreamOrder()
            pending: list = [current]
            while not order.finished:
                for update in pending:
                    if (item := order.admit(shown(update))) is not None:
                        yield item
                if order.finished:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    pending = [arrived.get(timeout=min(remaining, 1.0))]
                except queue.Empty:
                    pending = []
        finally:
            stop()

    def download(self, status: GenerationStatus, path: Path) -> Path:
        """Fetch the video by its presigned URL (fresh when the request has just finished)."""
        if status.output is None:
            raise NotFoundError(f"generation {status.request_id!r} has no video: it is {status.state.value}")
        with httpx.stream("GET", status.output.url, timeout=60, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise NotFoundError(f"the video link of {status.request_id!r} answered {response.status_code} "
                                    "(presigned links expire; the gateway's stable link does not)",
                                    status_code=response.status_code)
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return path

    def quote(self, request: GenerationRequest | Mapping[str, Any]) -> float:
        return self.build_request(request).quote()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything sent so far is acknowledged (or the deadline passes)."""
        self._producer.flush(timeout=timeout_s or self.settings.submit_deadline_s)

    def close(self) -> None:
        """Flush what is pending (status records) for up to 5 s, then close; never raises for Kafka."""
        if self._follower is not None:
            self._follower.close()
        try:
            self._producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("closing the producer left records undelivered: %s", exc)


class Generation(Receipt):
    """A submitted generation: its receipt, and the calls that follow it."""

    _client: FramebusClient | None = PrivateAttr(None)

    def status(self) -> GenerationStatus | None:
        return self._bound().status(self.request_id)

    def wait(self, timeout: float | None = None) -> GenerationStatus:
        return self._bound().wait(self.request_id, timeout=timeout)

    def events(self, timeout: float | None = None) -> Iterator[StreamItem]:
        return self._bound().events(self.request_id, timeout=timeout)

    def cancel(self) -> None:
        self._bound().cancel(self.request_id)

    def _bound(self) -> FramebusClient:
        if self._client is None:
            raise ConfigurationError("this receipt is not bound to a client; use client.wait(request_id)")
        return self._client


class FramebusClient:
    """One interface over two transports: HTTP (``base_url`` and ``api_key``) or Kafka (the rest).

    ``timeout_s`` bounds each HTTP call, ``retries`` the retries of a transient failure;
    Kafka's deadlines are ``settings.submit_deadline_s`` and each call's ``timeout_s``.
    """

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, tenant_id: str | None = None,
                 settings: ClientSettings | None = None, source: str = SDK_SOURCE,
                 on_accepted: Callable[[StatusChanged], None] | None = None, timeout_s: float = 30.0,
                 retries: int = 4, signing_key: str | None = None) -> None:
        self._http: HttpTransport | None = None
        self._kafka: KafkaTransport | None = None
        if base_url is not None:
            self._http = HttpTransport(base_url, _required(api_key), timeout_s=timeout_s, retries=retries)
        else:
            self._kafka = KafkaTransport(tenant_id=tenant_id, settings=settings, source=source,
                                         on_accepted=on_accepted, signing_key=signing_key)

    # --- Kafka only: what the services and the admin tools build on -------------------------
    @property
    def kafka(self) -> KafkaTransport:
        if self._kafka is None:
            raise ConfigurationError("this client speaks HTTP; publishing events needs a Kafka client")
        return self._kafka

    @property
    def settings(self) -> ClientSettings:
        return self.kafka.settings

    @property
    def tenant_id(self) -> str:
        return self.kafka.tenant_id

    def publish(self, event, topic: str, *, traceparent: str | None = None):
        return self.kafka.publish(event, topic, traceparent=traceparent)

    def build_request(self, request: GenerationRequest | Mapping[str, Any]) -> GenerationRequest:
        return self.kafka.build_request(request)

    def quote(self, request: GenerationRequest | Mapping[str, Any]) -> float:
        return self.kafka.quote(request)

    def flush(self, timeout_s: float | None = None) -> None:
        if self._kafka is not None:
            self._kafka.flush(timeout_s)

    # --- both transports -------------------------------------------------------------------
    def submit(self, request: GenerationRequest | Mapping[str, Any], *, traceparent: str | None = None) -> Generation:
        return self.submit_many([request], traceparent=traceparent)[0]

    def submit_many(self, requests: Iterable[GenerationRequest | Mapping[str, Any]], *,
                    traceparent: str | None = None) -> list[Generation]:
        """Over Kafka: all validated, then sent pipelined (see ``KafkaTransport.submit_many``).
        Over HTTP: one call each, in order; a refusal raises, the ones before it stay submitted."""
        if self._kafka is not None:
            receipts = self._kafka.submit_many(requests, traceparent=traceparent)
        else:
            assert self._http is not None
            receipts = [Receipt.model_validate(self._http.submit(_as_mapping(r), traceparent)) for r in requests]
        return [self._handle(receipt) for receipt in receipts]

    def status(self, request_id: str, *, timeout_s: float = 10.0) -> GenerationStatus | None:
        """Where the request is now, or None if this tenant has no such request."""
        if self._kafka is not None:
            return self._kafka.status(request_id, timeout_s=timeout_s)
        assert self._http is not None
        return self._http.status(request_id)

    def events(self, request_id: str, *, timeout: float | None = None) -> Iterator[StreamItem]:
        """The request's status now, each change and progress line, ending with its terminal state;
        raises WaitTimeout if ``timeout`` seconds pass first (None: no limit)."""
        deadline = _deadline(timeout)
        stream = (self._kafka.events(request_id, deadline) if self._kafka is not None
                  else self._http.events(request_id, deadline))  # type: ignore[union-attr]
        for item in stream:
            yield item
            if item.terminal:
                return
        raise WaitTimeout(f"generation {request_id!r} did not finish within {timeout:g}s")

    def wait(self, request_id: str, *, timeout: float | None = None) -> GenerationStatus:
        """Block until the request ends; its final status (completed, failed or cancelled)."""
        for item in self.events(request_id, timeout=timeout):
            if item.terminal:
                return item.data  # type: ignore[return-value]
        raise AssertionError("events() ends with a terminal item or raises")

    def run(self, request: GenerationRequest | Mapping[str, Any], *, timeout: float | None = None) -> GenerationStatus:
        """Submit and wait in one call."""
        return self.submit(request).wait(timeout=timeout)

    def cancel(self, request_id: str, *, reason: str = "cancelled by the client") -> None:
        if self._kafka is not None:
            self._kafka.cancel(request_id, reason=reason)
        else:
            assert self._http is not None
            self._http.cancel(request_id)

    def download(self, result: GenerationStatus, path: str | Path) -> Path:
        """Save a completed generation's MP4 to ``path`` (over HTTP through the stable link, which
        never expires; over Kafka through the presigned URL)."""
        if self._http is not None and result.video_url:
            return self._http.download(result.video_url, Path(path))
        return self.kafka.download(result, Path(path))

    def close(self) -> None:
        if self._kafka is not None:
            self._kafka.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> FramebusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _handle(self, receipt: Receipt) -> Generation:
        handle = Generation.model_validate(receipt.model_dump())
        handle._client = self
        return handle


class AsyncGeneration(Receipt):
    """A submitted generation, for ``AsyncFramebusClient``."""

    _client: AsyncFramebusClient | None = PrivateAttr(None)

    async def status(self) -> GenerationStatus | None:
        return await self._bound().status(self.request_id)

    async def wait(self, timeout: float | None = None) -> GenerationStatus:
        return await self._bound().wait(self.request_id, timeout=timeout)

    def events(self, timeout: float | None = None) -> AsyncIterator[StreamItem]:
        return self._bound().events(self.request_id, timeout=timeout)

    async def cancel(self) -> None:
        await self._bound().cancel(self.request_id)

    def _bound(self) -> AsyncFramebusClient:
        if self._client is None:
            raise ConfigurationError("this receipt is not bound to a client; use client.wait(request_id)")
        return self._client


class AsyncFramebusClient:
    """``FramebusClient`` for asyncio. Over HTTP every call is non-blocking (httpx); over Kafka the
    producer's acknowledgement waits run in a thread and waits ride on the shared follower, so a
    thousand concurrent ``wait`` calls hold no thread each."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, tenant_id: str | None = None,
                 settings: ClientSettings | None = None, source: str = SDK_SOURCE, timeout_s: float = 30.0,
                 retries: int = 4, signing_key: str | None = None) -> None:
        self._http: AsyncHttpTransport | None = None
        self._kafka: KafkaTransport | None = None
        if base_url is not None:
            self._http = AsyncHttpTransport(base_url, _required(api_key), timeout_s=timeout_s, retries=retries)
        else:
            self._kafka = KafkaTransport(tenant_id=tenant_id, settings=settings, source=source, signing_key=signing_key)

    async def submit(self, request: GenerationRequest | Mapping[str, Any], *,
                     traceparent: str | None = None) -> AsyncGeneration:
        return (await self.submit_many([request], traceparent=traceparent))[0]

    async def submit_many(self, requests: Iterable[GenerationRequest | Mapping[str, Any]], *,
                          traceparent: str | None = None) -> list[AsyncGeneration]:
        if self._kafka is not None:
            receipts = await asyncio.to_thread(self._kafka.submit_many, list(requests), traceparent=traceparent)
        else:
            assert self._http is not None
            receipts = [Receipt.model_validate(await self._http.submit(_as_mapping(r), traceparent))
                        for r in requests]
        return [self._handle(receipt) for receipt in receipts]

    async def status(self, request_id: str, *, timeout_s: float = 10.0) -> GenerationStatus | None:
        if self._kafka is not None:
            return await asyncio.to_thread(self._kafka.status, request_id, timeout_s=timeout_s)
        assert self._http is not None
        return await self._http.status(request_id)

    async def events(self, request_id: str, *, timeout: float | None = None) -> AsyncIterator[StreamItem]:
        deadline = _deadline(timeout)
        stream = (self._kafka_events(request_id, deadline) if self._kafka is not None
                  else self._http.events(request_id, deadline))  # type: ignore[union-attr]
        async for item in stream:
            yield item
            if item.terminal:
                return
        raise WaitTimeout(f"generation {request_id!r} did not finish within {timeout:g}s")

    async def wait(self, request_id: str, *, timeout: float | None = None) -> GenerationStatus:
        async for item in self.events(request_id, timeout=timeout):
            if item.terminal:
                return item.data  # type: ignore[return-value]
        raise AssertionError("events() ends with a terminal item or raises")

    async def run(self, request: GenerationRequest | Mapping[str, Any], *,
                  timeout: float | None = None) -> GenerationStatus:
        return await (await self.submit(request)).wait(timeout=timeout)

    async def cancel(self, request_id: str, *, reason: str = "cancelled by the client") -> None:
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.cancel, request_id, reason=reason)
        else:
            assert self._http is not None
            await self._http.cancel(request_id)

    async def download(self, result: GenerationStatus, path: str | Path) -> Path:
        if self._http is not None and result.video_url:
            return await self._http.download(result.video_url, Path(path))
        if self._kafka is None:
            raise NotFoundError(f"generation {result.request_id!r} has no video link")
        return await asyncio.to_thread(self._kafka.download, result, Path(path))

    async def close(self) -> None:
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.close)
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> AsyncFramebusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _kafka_events(self, request_id: str, deadline: float) -> AsyncIterator[StreamItem]:
        """The Kafka stream without a thread per waiter: the follower hands updates to this loop."""
        assert self._kafka is not None
        follower, loop, arrived = self._kafka.follower, asyncio.get_running_loop(), asyncio.Queue()
        stop = await asyncio.to_thread(follower.listen, request_id,
                                       lambda update: loop.call_soon_threadsafe(arrived.put_nowait, update),
                                       timeout_s=max(1.0, deadline - time.monotonic()))
        try:
            current = follower.status(request_id, timeout_s=1.0)  # its partition is read: a lookup
            if current is None:
                raise NotFoundError(f"no generation {request_id!r} for tenant {self._kafka.tenant_id!r}")
            order, update = StreamOrder(), current
            while True:
                if (item := order.admit(shown(update))) is not None:
                    yield item
                if order.finished:
                    return
                try:
                    update = await asyncio.wait_for(arrived.get(), timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    return
        finally:
            stop()

    def _handle(self, receipt: Receipt) -> AsyncGeneration:
        handle = AsyncGeneration.model_validate(receipt.model_dump())
        handle._client = self
        return handle


def _required(api_key: str | None) -> str:
    if not api_key:
        raise ConfigurationError("an HTTP client needs the tenant's API key (api_key=...)")
    return api_key


def _deadline(timeout: float | None) -> float:
    """When ``events``/``wait`` give up (monotonic clock); no timeout: never, in practice."""
    return time.monotonic() + (timeout if timeout is not None else 10 * 365 * 86400)


def _as_mapping(request: GenerationRequest | Mapping[str, Any]) -> Mapping[str, Any]:
    return request.model_dump(mode="json", exclude_unset=True) if isinstance(request, BaseModel) else request


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
