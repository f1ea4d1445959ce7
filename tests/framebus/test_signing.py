"""Signed Kafka records (framebus.signing): what a signature covers, in both CloudEvents modes."""

from __future__ import annotations

import json

import pytest

from framebus.schemas.codec import STRUCTURED_CONTENT_TYPE, KafkaRecord, encode_event
from framebus.schemas.events import CancelRequested, GenerationRequest
from framebus.signing import (
    SIGNATURE_HEADER,
    SigningKeyError,
    key_bytes,
    new_key,
    sign,
    signature,
    signed_for,
    signed_with,
)


def _request(tenant_id: str = "acme") -> KafkaRecord:
    return encode_event(GenerationRequest(request_id="r-1", tenant_id=tenant_id, prompt="a red circle"), source="/t")


def test_a_signed_record_verifies_with_its_key_and_no_other() -> None:
    key, other = new_key(), new_key()
    record = sign(_request(), key)
    assert signed_with(record.headers, record.value, [other, key]) == key
    assert signed_with(record.headers, record.value, [other]) is None
    assert signed_with(_request().headers, _request().value, [key]) is None  # unsigned


@pytest.mark.parametrize("change", ["value", "ce_id", "ce_time", "ce_subject"])
def test_changing_the_value_or_a_signed_attribute_breaks_the_signature(change: str) -> None:
    key = new_key()
    record = sign(_request(), key)
    if change == "value":
        changed = KafkaRecord(record.key, record.value.replace(b"a red circle", b"a red square"), record.headers)
    else:
        changed = KafkaRecord(record.key, record.value,
                              [(n, b"tampered" if n == change else v) for n, v in record.headers])
    assert signed_with(changed.headers, changed.value, [key]) is None


def test_signing_again_replaces_the_signature_and_several_may_be_sent() -> None:
    first, second = new_key(), new_key()
    record = sign(sign(_request(), first), second)
    assert [n for n, _ in record.headers].count(SIGNATURE_HEADER) == 1
    assert signed_with(record.headers, record.value, [first]) is None
    unsigned = _request()
    both = f"{signature(first, unsigned.headers, unsigned.value)} {signature(second, unsigned.headers, unsigned.value)}"
    headers = [*unsigned.headers, (SIGNATURE_HEADER, both.encode())]
    assert signed_with(headers, unsigned.value, [second]) == second


def test_a_structured_mode_record_is_signed_over_its_attributes_and_raw_value() -> None:
    key = new_key()
    value = json.dumps({"specversion": "1.0", "id": "e-1", "source": "/java", "type": "framebus.control.cancel",
                        "subject": "acme", "time": "2026-12-02T10:00:00Z",
                        "data": {"schema_version": "1.7", "request_id": "r-1", "tenant_id": "acme"}}).encode()
    record = sign(KafkaRecord(b"acme", value, [("content-type", STRUCTURED_CONTENT_TYPE.encode())]), key)
    assert signed_with(record.headers, record.value, [key]) == key
    moved = value.replace(b'"subject": "acme"', b'"subject": "globex"')
    assert signed_with(record.headers, moved, [key]) is None


def test_only_the_topics_a_tenant_writes_are_signed() -> None:
    key = new_key()
    cancel = encode_event(CancelRequested(request_id="r-1", tenant_id="acme"), source="/t")
    assert signed_with(signed_for("framebus.control", cancel, key).headers, cancel.value, [key]) == key
    assert signed_for("framebus.status", cancel, key) is cancel
    assert signed_for("framebus.control", cancel, None) is cancel


@pytest.mark.parametrize("key", ["whsec_abc", "fbsk_not base64!", "fbsk_" + "QUJD"])
def test_a_malformed_key_is_refused_with_the_reason(key: str) -> None:
    with pytest.raises(SigningKeyError):
        key_bytes(key)


def test_settings_refuse_a_malformed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from framebus.config import ClientSettings

    monkeypatch.setenv("FRAMEBUS_SIGNING_KEY", "whsec_abc")
    with pytest.raises(ValueError, match="FRAMEBUS_SIGNING_KEY: a framebus signing key starts with 'fbsk_'"):
        ClientSettings()
