"""CloudEvents binary mode: our records read by the SDK's Kafka binding and back, bad records named."""

from __future__ import annotations

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from schemas.codec import Envelope, decode, encode
from schemas.errors import CodecError

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
    (lambda h, v: ([(k, b"0.3" if k == "ce_specversion" else x) for k, x in h], v), "unsupported_specversion"),
    (lambda h, v: ([(k, b"text/plain" if k == "content-type" else x) for k, x in h], v), "unsupported_content_type"),
    (lambda h, v: (h, b"{not json"), "invalid_json"),
    (lambda h, v: (h, b"[1, 2]"), "invalid_data"),
    (lambda h, v: (h, b"\xff\xfe"), "invalid_json"),
])
def test_bad_records_are_rejected_with_a_machine_readable_reason(mutate, reason) -> None:
    record = _record()
    headers, value = mutate(record.headers, record.value)
    with pytest.raises(CodecError) as caught:
        decode(headers, value)
    assert caught.value.reason == reason
