"""CloudEvents on Kafka: our binary records read by the SDK's Kafka binding and back, structured-mode
records (ours and the SDK's) read like their binary twins, bad records named."""

from __future__ import annotations

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from framebus.schemas.codec import Envelope, decode, decode_event, encode, encode_event
from framebus.schemas.errors import CodecError

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _record():
    return encode(Envelope(type="framebus.generation.requested", source="/framebus/sdk", subject="tenant-a",
                           data={"prompt": "a red fox"}, traceparent=TRACEPARENT), key="tenant-a")


def test_encoded_record_has_binary_mode_headers() -> None:
    record = _record()
    headers = dict(record.headers)
    assert record.key == b"tenant-a"
    assert headers["ce_specversion"] == b"1.0" and headers["ce_subject"] == b"tenant-a"
    assert headers["content-type"] == b"application/json" and headers["traceparent"] == TRACEPARENT.encode()
    assert {"ce_id", "ce_source", "ce_type", "ce_time"} <= set(headers)


def test_round_trip_keeps_every_attribute() -> None:
    envelope = decode(_record().headers, _record().value)
    assert envelope.type == "framebus.generation.requested" and envelope.subject == "tenant-a"
    assert envelope.data == {"prompt": "a red fox"} and envelope.traceparent == TRACEPARENT


def test_the_cloudevents_sdk_reads_our_records_and_we_read_its() -> None:
    record = _record()
    event = ce_kafka.from_binary(ce_kafka.KafkaMessage(dict(record.headers), record.key, record.value), JSONFormat())
    assert event.get_type() == "framebus.generation.requested" and event.get_data() == {"prompt": "a red fox"}
    theirs = ce_kafka.to_binary(CloudEvent(attributes={"type": "x.y", "source": "/go-producer", "subject": "t9",
                                                       "datacontenttype": "application/json"}, data={"k": 1}),
                                JSONFormat())
    ours = decode(theirs.headers.items(), theirs.value)
    assert (ours.type, ours.source, ours.subject, ours.data) == ("x.y", "/go-producer", "t9", {"k": 1})


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda h, v: ([x for x in h if x[0] != "ce_type"], v), "missing_header"),
    (lambda h, v: ([(k, b"0.3" if k == "ce_specversion" else x) for k, x in h], v), "unsupported_version"),
    (lambda h, v: ([(k, b"text/plain" if k == "content-type" else x) for k, x in h], v), "invalid_request"),
    (lambda h, v: (h, b"{not json"), "invalid_json"),
    (lambda h, v: (h, b"[1, 2]"), "invalid_json"),
    (lambda h, v: (h, b"\xff\xfe"), "invalid_json"),
])
def test_bad_records_are_rejected_with_a_machine_readable_reason(mutate, reason) -> None:
    record = _record()
    headers, value = mutate(record.headers, record.value)
    with pytest.raises(CodecError) as caught:
        decode(headers, value)
    assert caught.value.reason == reason


# --- typed events ------------------------------------------------------------------------

def _request_record(**data_changes):
    import json

    from framebus.schemas.codec import KafkaRecord, encode_event
    from framebus.schemas.events import GenerationRequest

    record = encode_event(GenerationRequest(request_id="r-1", tenant_id="acme", prompt="a red fox"), source="/t")
    data = {**json.loads(record.value), **data_changes}
    data = {k: v for k, v in data.items() if v is not DROP}
    return KafkaRecord(record.key, json.dumps(data).encode(), record.headers)


DROP = object()


def test_typed_event_round_trips_through_the_codec() -> None:
    from framebus.schemas.codec import decode_event, encode_event
    from framebus.schemas.events import GenerationRequest

    sent = GenerationRequest(request_id="r-1", tenant_id="acme", prompt="a red fox", tier="interactive")
    record = encode_event(sent, source="/t", traceparent=TRACEPARENT)
    decoded = decode_event(record.headers, record.value)
    assert decoded.event == sent and decoded.envelope.traceparent == TRACEPARENT
    assert record.key == b"acme" and dict(record.headers)["ce_subject"] == b"acme"


def test_a_newer_minor_version_is_accepted_and_unknown_fields_ignored() -> None:
    from framebus.schemas.codec import decode_event

    record = _request_record(schema_version="1.99", priority_hint="high")
    assert decode_event(record.headers, record.value).event.request_id == "r-1"


def test_a_newer_minor_with_unknown_nested_fields_is_read_too() -> None:
    """A rolling upgrade: a newer worker's result carries a timing field this reader does not know."""
    import json

    from framebus.schemas.codec import decode_event, encode_event
    from framebus.schemas.events import GenerationFailed

    sent = GenerationFailed(request_id="r-1", tenant_id="acme", tier="standard",
                            error={"code": "internal_error", "message": "boom"})
    record = encode_event(sent, source="/t")
    data = json.loads(record.value)
    data["schema_version"] = "1.99"
    data["timings"] = {**data.get("timings", {}), "warp_s": 1.5}
    data["error"]["hint"] = "a field from the future"
    read = decode_event(record.headers, json.dumps(data).encode()).event
    assert read.request_id == "r-1" and read.error.message == "boom"


@pytest.mark.parametrize(("changes", "reason", "fragment"), [
    ({"schema_version": "2.0"}, "unsupported_version", "major version 2"),
    ({"schema_version": "one"}, "unsupported_version", "MAJOR.MINOR"),
    ({"schema_version": DROP}, "unsupported_version", "no `schema_version`"),
    ({"priority_hint": "high"}, "invalid_request", "priority_hint"),
    ({"width": "832"}, "invalid_request", "width"),
    ({"num_frames": 10}, "invalid_request", "`num_frames` must be 4k+1"),
    ({"prompt": DROP}, "invalid_request", "prompt: Field required"),
    ({"tenant_id": "globex"}, "invalid_request", "does not match"),
])
def test_bad_typed_records_name_the_reason(changes, reason, fragment) -> None:
    from framebus.schemas.codec import decode_event

    record = _request_record(**changes)
    with pytest.raises(CodecError) as caught:
        decode_event(record.headers, record.value)
    assert caught.value.reason == reason and fragment in caught.value.detail


def test_unknown_event_type_is_named() -> None:
    from framebus.schemas.codec import decode_event

    record = encode(Envelope(type="com.example.other", source="/x", subject="acme", data={}), key="acme")
    with pytest.raises(CodecError) as caught:
        decode_event(record.headers, record.value)
    assert caught.value.reason == "unknown_event_type" and "com.example.other" in caught.value.detail


def test_a_request_built_with_the_cloudevents_sdk_is_accepted() -> None:
    from framebus.schemas.codec import decode_event

    event = CloudEvent(attributes={"type": "framebus.generation.requested", "source": "/java-producer",
                                   "subject": "acme", "datacontenttype": "application/json"},
                       data={"schema_version": "1.0", "request_id": "j-1", "tenant_id": "acme", "prompt": "a fox",
                             "num_frames": 17})
    message = ce_kafka.to_binary(event, JSONFormat())
    decoded = decode_event(message.headers.items(), message.value).event
    assert (decoded.request_id, decoded.num_frames, decoded.quote()) == ("j-1", 17, decoded.quote())


def test_plain_http_webhooks_pass_only_the_allowlist_at_admission_and_are_trusted_after_it() -> None:
    from framebus.schemas.events import ADMITTED, GenerationRequest

    request = GenerationRequest.model_validate(
        {"request_id": "h-1", "tenant_id": "acme", "prompt": "a fox", "webhook_url": "http://127.0.0.1:9/hook"},
        context={"webhook_http_hosts": {"127.0.0.1"}})
    record = encode_event(request, source="/tests")
    with pytest.raises(CodecError, match="webhook_url"):
        decode_event(record.headers, record.value)  # no allowlist: https only
    with pytest.raises(CodecError, match="webhook_url"):
        decode_event(record.headers, record.value, context={"webhook_http_hosts": {"10.0.0.1"}})
    allowed = decode_event(record.headers, record.value, context={"webhook_http_hosts": {"127.0.0.1"}})
    assert allowed.event.webhook_url == "http://127.0.0.1:9/hook"
    assert decode_event(record.headers, record.value, context=ADMITTED).event == request


# --- structured content mode ---------------------------------------------------------------

def _structured_twin(record, *, content_type: bytes = b"application/cloudevents+json", **changes):
    """``record`` (binary mode) as structured mode: the ``ce_*`` headers as attributes, the value as ``data``."""
    import json

    from framebus.schemas.codec import KafkaRecord

    attributes = {name.removeprefix("ce_"): raw.decode() for name, raw in record.headers if name.startswith("ce_")}
    headers = dict(record.headers)
    attributes["datacontenttype"] = headers["content-type"].decode()
    if "traceparent" in headers:
        attributes["traceparent"] = headers["traceparent"].decode()
    event = {**attributes, "data": json.loads(record.value), **changes}
    event = {k: v for k, v in event.items() if v is not DROP}
    return KafkaRecord(record.key, json.dumps(event).encode(), [("content-type", content_type)])


def test_a_structured_record_decodes_to_exactly_what_its_binary_twin_does() -> None:
    from framebus.schemas.events import GenerationRequest

    sent = GenerationRequest(request_id="r-1", tenant_id="acme", prompt="a red fox", tier="interactive",
                             num_frames=17, metadata={"order": "42"})
    binary = encode_event(sent, source="/t", traceparent=TRACEPARENT)
    for content_type in (b"application/cloudevents+json", b"application/cloudevents+json; charset=utf-8",
                         b"Application/CloudEvents+JSON"):
        structured = _structured_twin(binary, content_type=content_type)
        assert decode_event(structured.headers, structured.value) == decode_event(binary.headers, binary.value)
        assert decode(structured.headers, structured.value) == decode(binary.headers, binary.value)
    assert decode_event(structured.headers, structured.value).event == sent


def test_a_structured_record_written_by_the_cloudevents_sdk_reads_like_its_binary_one() -> None:
    event = CloudEvent(attributes={"type": "framebus.generation.requested", "source": "/java-producer",
                                   "subject": "acme", "datacontenttype": "application/json", "partitionkey": "acme"},
                       data={"schema_version": "1.0", "request_id": "j-1", "tenant_id": "acme", "prompt": "a fox",
                             "tier": "interactive", "num_frames": 17, "submitted_at": "2026-01-02T03:04:05Z"})
    structured = ce_kafka.to_structured(event, JSONFormat())
    binary = ce_kafka.to_binary(event, JSONFormat())
    assert structured.headers == {"content-type": b"application/cloudevents+json"} and structured.key == "acme"
    read = decode_event(structured.headers.items(), structured.value)
    assert read == decode_event(binary.headers.items(), binary.value)
    assert (read.event.request_id, read.event.num_frames, read.envelope.source) == ("j-1", 17, "/java-producer")
    assert read.envelope.id == event.get_id() and read.envelope.time == event.get_time()


def test_a_structured_record_carries_the_trace_in_its_traceparent_attribute() -> None:
    event = CloudEvent(attributes={"type": "x.y", "source": "/go-producer", "subject": "t9",
                                   "traceparent": TRACEPARENT}, data={"k": 1})
    message = ce_kafka.to_structured(event, JSONFormat())
    envelope = decode(message.headers.items(), message.value)
    assert (envelope.type, envelope.subject, envelope.data, envelope.traceparent) == ("x.y", "t9", {"k": 1}, TRACEPARENT)


def test_a_binary_record_from_the_cloudevents_sdk_keeps_its_trace_in_ce_traceparent() -> None:
    event = CloudEvent(attributes={"type": "x.y", "source": "/go-producer", "subject": "t9",
                                   "traceparent": TRACEPARENT}, data={"k": 1})
    message = ce_kafka.to_binary(event, JSONFormat())
    assert "ce_traceparent" in message.headers
    assert decode(message.headers.items(), message.value).traceparent == TRACEPARENT


@pytest.mark.parametrize(("value", "reason", "fragment"), [
    (b"{not json", "invalid_json", "structured-mode record value is not JSON"),
    (b'{"id": "\xff"}', "invalid_json", "not UTF-8"),
    (b"[1, 2]", "invalid_json", "must be a JSON object but is list"),
    (b"", "invalid_json", "must be a JSON object but is NoneType"),
    ({"id": DROP}, "missing_header", "no `id` attribute"),
    ({"type": DROP}, "missing_header", "no `type` attribute"),
    ({"source": ""}, "missing_header", "no `source` attribute"),
    ({"specversion": DROP}, "missing_header", "no `specversion` attribute"),
    ({"specversion": "0.3"}, "unsupported_version", "`specversion` attribute must be 1.0 but is '0.3'"),
    ({"specversion": 1.0}, "invalid_request", "`specversion` attribute must be a string but is float"),
    ({"id": 42}, "invalid_request", "`id` attribute must be a string but is int"),
    ({"data": [1, 2]}, "invalid_json", "`data` must be a JSON object but is list"),
    ({"data": '{"prompt": "a fox"}'}, "invalid_json", "`data` must be a JSON object but is str"),
    ({"data": DROP}, "invalid_json", "`data` must be a JSON object but is NoneType"),
    ({"data": DROP, "data_base64": "e30="}, "invalid_json", "not `data_base64`"),
    ({"datacontenttype": "text/plain"}, "invalid_request", "`datacontenttype` attribute must be application/json"),
    ({"time": "yesterday"}, "missing_header", "`time` attribute is not an RFC 3339 time"),
    ({"type": "com.example.other"}, "unknown_event_type", "`type` attribute 'com.example.other'"),
    ({"subject": "globex"}, "invalid_request", "`subject` attribute 'globex' does not match"),
])
def test_bad_structured_records_are_rejected_with_a_clear_reason(value, reason, fragment) -> None:
    from framebus.schemas.codec import KafkaRecord

    twin = _structured_twin(_request_record())
    record = _structured_twin(_request_record(), **value) if isinstance(value, dict) else KafkaRecord(
        twin.key, value, twin.headers)
    with pytest.raises(CodecError) as caught:
        decode_event(record.headers, record.value)
    assert caught.value.reason == reason and fragment in caught.value.detail, caught.value.detail


def test_bad_data_in_a_structured_record_is_named_as_in_a_binary_one() -> None:
    binary = _request_record(width="832")
    structured = _structured_twin(binary)
    errors = []
    for record in (binary, structured):
        with pytest.raises(CodecError) as caught:
            decode_event(record.headers, record.value)
        errors.append((caught.value.reason, caught.value.detail))
    assert errors[0] == errors[1] and "width" in errors[0][1]


def test_the_data_of_a_record_is_found_in_either_mode_even_when_it_is_unreadable() -> None:
    import json

    from framebus.schemas.codec import event_data

    binary = _request_record()
    assert event_data(binary.headers, binary.value) == binary.value
    broken = _structured_twin(binary, id=DROP, specversion="0.3")  # the attributes are wrong, the data names the request
    assert json.loads(event_data(broken.headers, broken.value))["request_id"] == "r-1"
    assert event_data(broken.headers, b"{not json") is None
    assert event_data(broken.headers, json.dumps({"data": [1]}).encode()) is None
