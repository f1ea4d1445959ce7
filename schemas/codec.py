"""CloudEvents binary mode on Kafka: the only module that builds or reads ``ce_*`` headers.

Encoding and decoding go through the ``cloudevents`` SDK's own Kafka binding, so any
CloudEvents-aware consumer (Java, Go, Python) reads our records, and we read theirs.
``encode_event`` / ``decode_event`` add the typed models of ``schemas.events`` on top:
a record that fails anywhere raises CodecError with a machine-readable ``reason``
(an ErrorCode) and a ``detail`` naming what is wrong.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pydantic import ValidationError

from schemas.errors import CodecError
from schemas.events import SCHEMA_VERSION, Event
from schemas.registry import EVENT_MODELS
from schemas.state import ErrorCode
from schemas.validation import describe_errors
from schemas.versioning import check_compatible

CONTENT_TYPE = "application/json"
TRACEPARENT_HEADER = "traceparent"
_FORMAT = JSONFormat()


@dataclass(frozen=True)
class Envelope:
    """One CloudEvent as framebus sees it: the attributes we use, the JSON data, the trace."""

    type: str
    source: str
    subject: str  # the tenant id
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    traceparent: str | None = None


@dataclass(frozen=True)
class KafkaRecord:
    """What a producer sends: key, value and headers in the form Kafka clients take."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(envelope: Envelope, *, key: str | None) -> KafkaRecord:
    event = CloudEvent(
        attributes={"id": envelope.id, "type": envelope.type, "source": envelope.source,
                    "subject": envelope.subject, "time": envelope.time, "datacontenttype": CONTENT_TYPE},
        data=envelope.data,
    )
    message = ce_kafka.to_binary(event, _FORMAT)
    headers = [(name, value) for name, value in message.headers.items()]
    if envelope.traceparent:
        headers.append((TRACEPARENT_HEADER, envelope.traceparent.encode()))
    return KafkaRecord(key=key.encode() if key is not None else None, value=message.value, headers=headers)


def decode(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> Envelope:
    """Read a binary-mode CloudEvent; raise CodecError naming what is wrong."""
    header_map = {name: raw or b"" for name, raw in headers}
    for required in ("ce_id", "ce_type", "ce_source", "ce_specversion"):
        if required not in header_map:
            raise CodecError(ErrorCode.MISSING_HEADER, f"record has no `{required}` header")
    if header_map["ce_specversion"] != b"1.0":
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION,
                         f"`ce_specversion` must be 1.0 but is {header_map['ce_specversion']!r}")
    content_type = header_map.get("content-type", CONTENT_TYPE.encode()).decode(errors="replace")
    if not content_type.startswith(CONTENT_TYPE):
        raise CodecError(ErrorCode.INVALID_REQUEST, f"`content-type` must be {CONTENT_TYPE} but is {content_type!r}")
    try:
        data = json.loads(value or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"record value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CodecError(ErrorCode.INVALID_JSON, f"record value must be a JSON object but is {type(data).__name__}")
    try:
        event = ce_kafka.from_binary(ce_kafka.KafkaMessage(headers=header_map, key=None, value=value or b""), _FORMAT)
    except Exception as exc:  # the SDK raises several types for bad attributes
        raise CodecError(ErrorCode.MISSING_HEADER, str(exc)) from exc
    traceparent = header_map.get(TRACEPARENT_HEADER)
    return Envelope(type=event.get_type(), source=event.get_source(), subject=event.get_subject() or "",
                    data=data, id=event.get_id(), time=event.get_time() or datetime.now(UTC),
                    traceparent=traceparent.decode() if traceparent else None)


@dataclass(frozen=True)
class DecodedEvent:
    envelope: Envelope
    event: Event


def encode_event(event: Event, *, source: str, traceparent: str | None = None, event_id: str | None = None) -> KafkaRecord:
    """The record for ``event``: keyed by its partition key, the tenant as ``ce_subject``."""
    envelope = Envelope(type=event.event_type, source=source, subject=event.subject(),
                        data=event.model_dump(mode="json"), traceparent=traceparent,
                        **({"id": event_id} if event_id else {}))
    return encode(envelope, key=event.partition_key())


def decode_event(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> DecodedEvent:
    """Decode and validate one record into its event model, or raise CodecError saying why not."""
    envelope = decode(headers, value)
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE, f"`ce_type` {envelope.type!r} is not a framebus event type")
    data = dict(envelope.data)
    if "schema_version" not in data:
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION, "data has no `schema_version`")
    if check_compatible(data["schema_version"], SCHEMA_VERSION):
        # A newer minor may add fields; this consumer reads the ones it knows.
        data = {key: item for key, item in data.items() if key in model.model_fields}
    try:
        event = model.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        problems = "; ".join(f"{e.field}: {e.message}" for e in describe_errors(exc))
        raise CodecError(ErrorCode.INVALID_REQUEST, problems) from exc
    if event.subject() != envelope.subject:
        raise CodecError(ErrorCode.INVALID_REQUEST,
                         f"`ce_subject` {envelope.subject!r} does not match the event's tenant {event.subject()!r}")
    return DecodedEvent(envelope, event)
