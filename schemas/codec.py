"""CloudEvents on Kafka: the only module that builds or reads ``ce_*`` headers.

framebus writes binary content mode (attributes as ``ce_*`` headers, the data as the value)
and reads both modes the CloudEvents Kafka protocol binding defines: binary, and structured
(``content-type: application/cloudevents+json``, the whole event as one JSON object), so a
producer whose client or SDK only speaks structured mode still gets through. A structured
record decodes to exactly what its binary twin does, with the same checks and reasons.
The tests prove that the ``cloudevents`` SDK's own Kafka binding reads our records and
that we read its (both modes), so any CloudEvents-aware client (Java, Go, Python) interoperates.
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
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"  # structured mode in the JSON event format
TRACEPARENT_HEADER = "traceparent"
REQUIRED_ATTRIBUTES = ("id", "type", "source", "specversion")
# The attributes framebus reads; others (dataschema, extensions) are allowed and ignored.
USED_ATTRIBUTES = (*REQUIRED_ATTRIBUTES, "subject", "time", "datacontenttype", "traceparent")


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
    """Whether a record's ``ce_source`` is ``source``, without decoding it (a service skipping its own records,
    which framebus always writes in binary mode)."""
    return ("ce_source", source.encode()) in (headers or ())


def encode(envelope: Envelope, *, key: str | None) -> KafkaRecord:
    # Built directly rather than through the SDK's objects: this runs for every record of
    # the pipeline, and the interoperability tests hold it to what the SDK reads and writes.
    value = json.dumps(envelope.data, separators=(",", ":"), ensure_ascii=False).encode()
    return KafkaRecord(key=key.encode() if key is not None else None, value=value, headers=_headers(envelope))


@dataclass(frozen=True)
class _Parts:
    """A record's CloudEvent attributes (by attribute name) and data bytes, whichever content mode it came in."""

    attributes: dict[str, str]
    data: bytes | None
    structured: bool

    def named(self, attribute: str) -> str:
        """An attribute as the producer spelled it, so a rejection names what they wrote."""
        return f"`{attribute}` attribute" if self.structured else f"`{_BINARY_HEADERS[attribute]}` header"


# Where binary mode carries each attribute: ce_<name>, but the data's content type is the
# record's own content-type header and the trace is the plain W3C header.
_BINARY_HEADERS = {attribute: f"ce_{attribute}" for attribute in USED_ATTRIBUTES} | {
    "datacontenttype": "content-type", "traceparent": TRACEPARENT_HEADER}


def _parts(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> _Parts:
    header_map = {name: raw or b"" for name, raw in headers}
    if _is_structured(header_map.get("content-type")):
        return _structured_parts(value)
    return _binary_parts(header_map, value)


def _is_structured(content_type: bytes | None) -> bool:
    """Whether a record's content-type says structured mode; parameters (``; charset=utf-8``)
    and case do not matter, as media types compare."""
    return (content_type or b"").decode(errors="replace").split(";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE


def _binary_parts(header_map: dict[str, bytes], value: bytes | None) -> _Parts:
    try:
        attributes = {attribute: header_map[name].decode() for attribute, name in _BINARY_HEADERS.items()
                      if name in header_map}
        if "traceparent" not in attributes and "ce_traceparent" in header_map:
            # The CloudEvents SDKs write the tracing extension as ce_traceparent: the same trace.
            attributes["traceparent"] = header_map["ce_traceparent"].decode()
    except UnicodeDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"record header is not UTF-8: {exc}") from exc
    return _Parts(attributes, value, structured=False)


def _structured_parts(value: bytes | None) -> _Parts:
    """The attributes and data of one JSON-format CloudEvent; raise CodecError naming what is wrong."""
    event = decode_data(value, what="structured-mode record")
    for attribute in USED_ATTRIBUTES:
        if event.get(attribute) is not None and not isinstance(event[attribute], str):
            raise CodecError(ErrorCode.INVALID_REQUEST, f"`{attribute}` attribute must be a string "
                                                        f"but is {type(event[attribute]).__name__}")
    if "data_base64" in event:
        raise CodecError(ErrorCode.INVALID_JSON, "the event's data must be a JSON object in `data`, not `data_base64`")
    if not isinstance(event.get("data"), dict):
        raise CodecError(ErrorCode.INVALID_JSON,
                         f"`data` must be a JSON object but is {type(event.get('data')).__name__}")
    attributes = {attribute: event[attribute] for attribute in USED_ATTRIBUTES if event.get(attribute) is not None}
    # Serialized again so the data meets the very validation a binary record's value does (JSON mode, strict).
    return _Parts(attributes, json.dumps(event["data"]).encode(), structured=True)


def _attributes(parts: _Parts) -> Envelope:
    """The CloudEvent attributes (data left empty); raise CodecError naming what is wrong."""
    attributes = parts.attributes
    for required in REQUIRED_ATTRIBUTES:
        if not attributes.get(required):
            raise CodecError(ErrorCode.MISSING_HEADER, f"record has no {parts.named(required)}")
    if attributes["specversion"] != "1.0":
        raise CodecError(ErrorCode.UNSUPPORTED_VERSION,
                         f"{parts.named('specversion')} must be 1.0 but is {attributes['specversion']!r}")
    content_type = attributes.get("datacontenttype", CONTENT_TYPE)
    if not content_type.startswith(CONTENT_TYPE):
        also = "" if parts.structured else f" (or {STRUCTURED_CONTENT_TYPE} for a structured-mode record)"
        raise CodecError(ErrorCode.INVALID_REQUEST,
                         f"{parts.named('datacontenttype')} must be {CONTENT_TYPE}{also} but is {content_type!r}")
    raw_time = attributes.get("time")
    try:
        time = datetime.fromisoformat(raw_time) if raw_time else datetime.now(UTC)
    except ValueError as exc:
        raise CodecError(ErrorCode.MISSING_HEADER,
                         f"{parts.named('time')} is not an RFC 3339 time: {raw_time!r}") from exc
    return Envelope(type=attributes["type"], source=attributes["source"], subject=attributes.get("subject", ""),
                    data={}, id=attributes["id"], time=time, traceparent=attributes.get("traceparent") or None)


def decode(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> Envelope:
    """Read a CloudEvent in binary or structured mode; raise CodecError naming what is wrong."""
    parts = _parts(headers, value)
    return replace(_attributes(parts), data=decode_data(parts.data))


def signed_attributes(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> tuple[str, str, str]:
    """A record's ``id``, ``time`` and ``subject`` exactly as it spells them, in either content mode
    (empty where missing or unreadable): what a signature covers besides the value (framebus.signing)."""
    try:
        attributes = _parts(headers, value).attributes
    except CodecError:
        return "", "", ""
    return attributes.get("id", ""), attributes.get("time", ""), attributes.get("subject", "")


def event_data(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> bytes | None:
    """The data of a record as a binary-mode value, unchecked: the value itself, or a structured
    record's ``data`` (None when it has none). What an unreadable record still names is read from it."""
    content_type = next((raw for name, raw in headers or () if name == "content-type"), None)
    return _structured_data(value) if _is_structured(content_type) else value


def _structured_data(value: bytes | None) -> bytes | None:
    """A structured record's ``data`` object, even when its attributes are wrong (it may still name a request)."""
    try:
        event = json.loads(value or b"null")
    except ValueError:
        return None
    data = event.get("data") if isinstance(event, dict) else None
    return json.dumps(data).encode() if isinstance(data, dict) else None


def decode_data(value: bytes | None, *, what: str = "record") -> dict[str, Any]:
    """A record's value as a JSON object; raise CodecError, naming ``what`` was read, if it is not one."""
    try:
        data = json.loads(value or b"null")
    except UnicodeDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"{what} is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CodecError(ErrorCode.INVALID_JSON, f"{what} value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CodecError(ErrorCode.INVALID_JSON, f"{what} value must be a JSON object but is {type(data).__name__}")
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
    """Decode and validate one record (binary or structured mode) into its event model, or raise
    CodecError saying why not.

    ``context`` reaches the validators: ``{"webhook_http_hosts": {...}}`` is the admission
    point's allowlist for plain-http webhooks; ``ADMITTED`` trusts what admission passed.
    The envelope returned carries the attributes only: the event is the data.
    """
    parts = _parts(headers, value)
    envelope = _attributes(parts)
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        raise CodecError(ErrorCode.UNKNOWN_EVENT_TYPE,
                         f"{parts.named('type')} {envelope.type!r} is not a framebus event type")
    event = _validated_as_is(model, parts.data, context)
    if event is None:  # the slow path: says exactly what is wrong, or reads a newer minor's known fields
        event = _validated_known_fields(model, parts.data, context)
    if event.subject() != envelope.subject:
        raise CodecError(ErrorCode.INVALID_REQUEST, f"{parts.named('subject')} {envelope.subject!r} "
                                                    f"does not match the event's tenant {event.subject()!r}")
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
