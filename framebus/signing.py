"""Signed events on the Kafka path: who wrote a request or a cancel, proven by an HMAC.

Kafka tells a consumer nothing about the principal that produced a record, and a request
names its tenant in its own body. So every record on a topic a tenant may write
(``framebus.requests.*``, ``framebus.control``) carries a ``framebus-signature`` header:

    framebus-signature: v1,<base64 HMAC-SHA256 over  id "\\n" time "\\n" subject "\\n" value>

where id, time and subject are the CloudEvents attributes exactly as the record carries
them (``ce_*`` headers in binary mode, the JSON attributes in structured mode) and value is
the record's value byte for byte. Two kinds of key sign:

- a tenant's signing key (``fbsk_...``, ``framebus tenants signing-key``): proves that tenant,
  so the event must name it (``ce_subject`` and the body's ``tenant_id``, which the codec
  already holds equal);
- the services' key (``FRAMEBUS_SERVICE_SIGNING_KEY``): the gateway, the batch tracker and
  the workers act for any tenant, having checked who asked (an API key, a worker's own job).

The scheduler verifies at admission (``services/scheduler/authenticate.py``); the SDK signs
when given a key. Several space-separated signatures may be sent; one valid one suffices.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

from framebus.schemas.codec import KafkaRecord, signed_attributes
from framebus.schemas.topics import REQUEST_TIERS, request_topic

SIGNATURE_HEADER = "framebus-signature"
KEY_PREFIX = "fbsk_"
_VERSION = "v1"
# What a tenant may write, so what the scheduler checks (catalogue names, without a deployment's prefix).
SIGNED_TOPICS = frozenset({*(request_topic(tier) for tier in REQUEST_TIERS), "framebus.control"})


class SigningKeyError(ValueError):
    """A signing key that is not one: wrong prefix or not 32 bytes of base64."""


def new_key() -> str:
    """A fresh signing key: ``fbsk_`` and 32 random bytes in base64. Show it once, store it as a secret."""
    return KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def key_bytes(key: str) -> bytes:
    if not key.startswith(KEY_PREFIX):
        raise SigningKeyError(f"a framebus signing key starts with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(key[len(KEY_PREFIX):], validate=True)
    except ValueError as exc:
        raise SigningKeyError("a framebus signing key is base64 after its prefix") from exc
    if len(raw) != 32:
        raise SigningKeyError(f"a framebus signing key holds 32 bytes, this one {len(raw)}")
    return raw


def signature(key: str, headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> str:
    """The header value signing one record with ``key``."""
    digest = hmac.new(key_bytes(key), _content(headers, value), hashlib.sha256).digest()
    return f"{_VERSION},{base64.b64encode(digest).decode()}"


def sign(record: KafkaRecord, key: str) -> KafkaRecord:
    """``record`` with its signature header (any earlier one replaced)."""
    headers = [(name, raw) for name, raw in record.headers if name != SIGNATURE_HEADER]
    return KafkaRecord(record.key, record.value,
                       [*headers, (SIGNATURE_HEADER, signature(key, headers, record.value).encode())])


def signed_for(topic: str, record: KafkaRecord, key: str | None) -> KafkaRecord:
    """``record`` as it goes to catalogue topic ``topic``: signed with ``key`` where that topic takes
    signatures and a key is at hand, else as it is."""
    return sign(record, key) if key is not None and topic in SIGNED_TOPICS else record


def signed_with(headers: Sequence[tuple[str, bytes | None]], value: bytes | None,
                keys: Iterable[str]) -> str | None:
    """The key (one of ``keys``) that signed this record, or None: unsigned, or signed by none of them."""
    sent = next((raw for name, raw in headers if name == SIGNATURE_HEADER), None)
    if not sent:
        return None
    offered = [part.split(",", 1)[1].encode() for part in sent.decode(errors="replace").split()
               if part.startswith(f"{_VERSION},")]
    unsigned = [(name, raw) for name, raw in headers if name != SIGNATURE_HEADER]
    content = _content(unsigned, value)
    for key in keys:
        expected = base64.b64encode(hmac.new(key_bytes(key), content, hashlib.sha256).digest())
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return key
    return None


def is_signed(headers: Iterable[tuple[str, bytes | None]]) -> bool:
    return any(name == SIGNATURE_HEADER for name, _ in headers)


def _content(headers: Iterable[tuple[str, bytes | None]], value: bytes | None) -> bytes:
    event_id, time, subject = signed_attributes(headers, value)
    return b"\n".join([event_id.encode(), time.encode(), subject.encode(), value or b""])
