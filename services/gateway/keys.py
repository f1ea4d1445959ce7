"""Tenant API keys: issued once in the clear, stored only as a SHA-256 of the secret.

A key reads ``fb_<key_id>_<secret>``. The key id is public (it finds the tenant without
a scan); the secret is 32 random bytes, so a plain SHA-256 is enough (no slow hash is
needed for high-entropy secrets), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from framebus.schemas.events import ApiKeyRecord

_KEY = re.compile(r"^fb_([a-z0-9]{8,32})_([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True)
class IssuedKey:
    plaintext: str  # shown to the operator once, never stored
    record: ApiKeyRecord


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(f"fb_{key_id}_{secret}", ApiKeyRecord(key_id=key_id, secret_sha256=hash_secret(secret)))


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented)
    return (match[1], match[2]) if match else None


def secret_matches(secret: str, record: ApiKeyRecord) -> bool:
    return not record.revoked and hmac.compare_digest(hash_secret(secret), record.secret_sha256)
