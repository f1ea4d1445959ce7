"""CloudEvents binary mode: our records read by the SDK's Kafka binding and back, bad records named."""

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

    record = _request_record(schema_version="1.7", priority_hint="high")
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
