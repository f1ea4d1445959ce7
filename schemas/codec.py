"""CloudEvents binary mode on Kafka: the only module that builds or reads ``ce_*`` headers.

The headers follow the CloudEvents Kafka protocol binding exactly; the tests prove that
the ``cloudevents`` SDK's own Kafka binding reads our records and that we read its, so
any CloudEvents-aware consumer (Java, Go, Python) interoperates.
``encode_event`` / ``decode_event`` add the typed models of ``schemas.events`` on top:
a record that fails anywhere raises CodecError with a machine-readable ``reason``
(an ErrorCode) and a ``detail`` naming what is wrong.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from framebus.schemas.errors import CodecError
from framebus.schemas.events import SCHEMA_VERSION, Event
from framebus.schemas.registry import EVENT_MODELS
from framebus.schemas.state import ErrorCode
from framebus.schemas.validation import describe_errors
from framebus.schemas.versioning import check_compatible

CONTENT_TYPE = "application/json"
TRACEPARENT_HEADER = "traceparent"


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
    value: bytes | None  # None: a tombstone (compacted topics delete the key)
    headers: list[tuple[str, bytes]]


def _headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Binary-mode attributes as the CloudEvents Kafka binding spells them (ce_*, content-type)."""
    headers = [("ce_specversion", b"1.0"), ("ce_id", envelope.id.encode()), ("ce_source", envelope.source.encode()),
               ("ce_type", envelope.type.encode()), ("ce_subject", envelope.subject.encode()),
               ("ce_time", envelope.time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()),
               ("content-type", CONTENT_TYPE.encode())]
    if envelope.traceparent:
        headers.append((TRACEPARENT_HEADER, envelope.traceparent.encode()))
    return headers


def written_by(headers: Iterable[tuple[str, bytes | None]] | None, source: str) -> bool:
    """Whether a record's ``ce_source`` is ``source``, without decoding it (a service skipping its own records)."""
    return ("ce_source", source.encode()) in (headers or ())


def encode(envelope: Envelope, *, key: str | None) -> KafkaRecord:
    # Built directly rather than through the SDK's objects: this runs for every record of
    # the pipeline, and the interoperability tests hold it to what the SDK reads and writes.
    value = json.dumps(envelope.data, separators=(",", ":"), ensure_ascii=False).encode()
    return KafkaRecord(key=key.encode() if key is not None else None, value=value, headers=_headers(envelope))


def _attributes(headers: Iterable[tuple[str, bytes | None]]) -> Envelope:
    """The CloudEvent attributes from the headers (data left empty); raise CodecError naming what is wrong."""
    header_map = {name: raw or b"" for name, raw in headers}
    for required in ("ce_id", "ce_type", "ce_source", "ce_specversion"):
        if not header_map.get(required):
            raise CodecError(ErrorCode.MISSING_HEADER, f"record has no `{required}` header")
    if header_map["ce_specversion"] != b"1.0":
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION,
                         f"`ce_specversion` must be 1.0 but is {header_map['ce_specversion']!r}")
    content_type = header_map.get("content-type", CONTENT_TYPE.encode()).decode(errors="replace")
    if not content_type.startswith(CONTENT_TYPE):
        raise CodecError(ErrorCode.INVALID_REQUEST, f"`content-type` must be {CONTENT_TYPE} but is {content_type!r}")
    raw_time = header_map.get("ce_time")
    try:
        attributes = {name: header_map[f"ce_{name}"].decode() for name in ("id", "type", "source")}
        subject = header_map.get("ce_subject", b"").decode()
        time = datetime.fromisoformat(raw_time.decode()) if raw_time else datetime.now(UTC)
    except UnicodeDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"record header is not UTF-8: {exc}") from exc
    except ValueError as exc:
        raise CodecError(ErrorCode.MISSING_HEADER, f"`ce_time` is not an RFC 3339 time: {raw_time!r}") from exc
    traceparent = header_map.get(TRACEPARENT_HEADER)
    return Envelope(type=attributes["type"], source=attributes["source"], subject=subject, data={},
                    id=attributes["id"], time=time, traceparent=traceparent.decode() if traceparent else None)


def decode(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> Envelope:
    """Read a binary-mode CloudEvent; raise CodecError naming what is wrong."""
    return replace(_attributes(headers), data=decode_data(value))


def decode_data(value: bytes | None) -> dict[str, Any]:
    """A record's value as a JSON object; raise CodecError if it is not one."""
    try:
        data = json.loads(value or b"null")
    except UnicodeDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"record is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"record value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CodecError(ErrorCode.INVALID_JSON, f"record value must be a JSON object but is {type(data).__name__}")
    return data


@dataclass(frozen=True)
class DecodedEvent:
    envelope: Envelope
    event: Event


def encode_event(event: Event, *, source: str, traceparent: str | None = None, event_id: str | None = None) -> KafkaRecord:
    """The record for ``event``: keyed by its partition key, the tenant as ``ce_subject``."""
    envelope = Envelope(type=event.event_type, source=source, subject=event.subject(), data={},
                        traceparent=traceparent, **({"id": event_id} if event_id else {}))
    return KafkaRecord(key=event.partition_key().encode(), value=event.model_dump_json().encode(),
                       headers=_headers(envelope))


def decode_event(headers: Iterable[tuple[str, bytes | None]], value: bytes | None, *,
                 context: dict | None = None) -> DecodedEvent:
    """Decode and validate one record into its event model, or raise CodecError saying why not.

    ``context`` reaches the validators: ``{"webhook_http_hosts": {...}}`` is the admission
    point's allowlist for plain-http webhooks; ``ADMITTED`` trusts what admission passed.
    The envelope returned carries the attributes only: the event is the data.
    """
    envelope = _attributes(headers)
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE, f"`ce_type` {envelope.type!r} is not a framebus event type")
    event = _validated_as_is(model, value, context)
    if event is None:  # the slow path: says exactly what is wrong, or reads a newer minor's known fields
        event = _validated_known_fields(model, value, context)
    if event.subject() != envelope.subject:
        raise CodecError(ErrorCode.INVALID_REQUEST,
                         f"`ce_subject` {envelope.subject!r} does not match the event's tenant {event.subject()!r}")
    return DecodedEvent(envelope, event)


def _validated_as_is(model, value: bytes | None, context: dict | None) -> Event | None:
    """The common case in one pass of pydantic's JSON parser: a record of our own major that
    validates as it is. None when it does not (the caller finds out why)."""
    try:
        event = model.model_validate_json(value or b"null", strict=True, context=context)
    except ValidationError:
        return None
    if "schema_version" not in event.model_fields_set:
        return None  # the default filled it in; a record must say which version it is
    check_compatible(event.schema_version, SCHEMA_VERSION)  # another major: CodecError
    return event


def known_fields(model: type[BaseModel], data: dict) -> dict:
    """``data`` without the fields ``model`` does not know, at every depth (nested models, and
    lists, tuples and dicts of them)."""
    return {key: _known_within(model.model_fields[key].annotation, item) for key, item in data.items()
            if key in model.model_fields}


def _known_within(annotation: Any, item: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return known_fields(annotation, item) if isinstance(item, dict) else item
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _known_within(args[0], item)
    if origin in (Union, UnionType):  # Optional[Model]: the one model in it
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return _known_within(models[0], item) if len(models) == 1 else item
    if origin in (list, tuple, set, frozenset) and isinstance(item, list):
        inner = [a for a in args if a is not Ellipsis]
        return [_known_within(inner[0], x) for x in item] if len(inner) == 1 else item
    if origin is dict and isinstance(item, dict) and len(args) == 2:
        return {key: _known_within(args[1], value) for key, value in item.items()}
    return item


def _validated_known_fields(model, value: bytes | None, context: dict | None) -> Event:
    data = decode_data(value)
    if "schema_version" not in data:
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION, "data has no `schema_version`")
    if check_compatible(data["schema_version"], SCHEMA_VERSION):
        # A newer minor may add fields, nested ones too (1.5 added `timings.text_encode_s`); this
        # consumer reads the ones it knows, so a rolling upgrade never dead-letters a newer record.
        data = known_fields(model, data)
    try:
        return model.model_validate_json(json.dumps(data), strict=True, context=context)
    except ValidationError as exc:
        problems = "; ".join(f"{e.field}: {e.message}" for e in describe_errors(exc))
        raise CodecError(ErrorCode.INVALID_REQUEST, problems) from exc
