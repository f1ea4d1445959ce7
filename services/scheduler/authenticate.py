"""Who sent a request or a cancel: the scheduler's check of ``framebus-signature`` (framebus.signing).

Pure: keys come from framebus.signing.keys (``apply_keys``) and the settings, the time is
passed in. A record passes when it is signed by the tenant it names or by the services'
key, was signed within ``max_age_s`` of now, and its event id was not admitted before in
that window (a replay: the window bounds what must be remembered). A service-only event
(a worker handing work back) must carry the services' signature. With signatures optional
an unsigned record passes, but a record that is signed must be signed right.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from framebus.schemas.codec import decode_event
from framebus.schemas.webhooks import SigningKeys
from framebus.signing import is_signed, signed_with

Headers = Sequence[tuple[str, bytes | None]]


class Authenticator:
    def __init__(self, *, required: bool = False, service_keys: Sequence[str] = (), max_age_s: float = 300.0) -> None:
        self.required = required
        self.service_keys = tuple(service_keys)
        self.max_age_s = max_age_s
        self.keys: dict[str, tuple[str, ...]] = {}  # tenant -> its keys, newest first
        self._admitted: dict[tuple[str, str], float] = {}  # (tenant, event id) -> when

    def apply_keys(self, record) -> None:
        """A record of framebus.signing.keys: the tenant's current keys (a tombstone removes them)."""
        if record.value is None:
            self.keys.pop(record.key.decode(), None)
            return
        event = decode_event(record.headers, record.value).event
        if isinstance(event, SigningKeys):
            self.keys[event.tenant_id] = event.keys

    def check(self, headers: Headers, value: bytes | None, *, tenant_id: str, event_id: str, signed_at: datetime,
              now: float, services_only: bool = False) -> str | None:
        """None when the record may pass; else why not, in one line for the rejected topic."""
        if not is_signed(headers):
            if self.required:
                return ("unsigned: this deployment admits only records signed by their tenant's key "
                        "(framebus-signature header; see the README's Security section)")
            return None
        signer = self._signer(headers, value, tenant_id, services_only)
        if signer is None:
            whose = "the services' key" if services_only else f"a key of tenant {tenant_id!r} or of the services"
            return f"not signed by {whose} (another tenant's key, a revoked key, or a changed record)"
        age = now - signed_at.timestamp()
        if abs(age) > self.max_age_s:
            return (f"signed {age:+.0f} s from the scheduler's clock, beyond {self.max_age_s:g} s: "
                    f"a replayed record, or a producer whose clock is wrong")
        if (tenant_id, event_id) in self._admitted:
            return f"event {event_id!r} was already admitted: a replayed record"
        self._admitted[(tenant_id, event_id)] = now
        return None

    def vouches(self, headers: Headers, value: bytes | None, tenant_id: str) -> bool:
        """Whether a record may speak for ``tenant_id`` at all (e.g. get a ``failed`` result in its name
        though it is unreadable): signed by that tenant or the services, or unsigned where that is allowed."""
        if not is_signed(headers):
            return not self.required
        return self._signer(headers, value, tenant_id, services_only=False) is not None

    def expire(self, now: float) -> None:
        """Forget event ids older than the window: a replay of one is refused by its time."""
        self._admitted = {key: at for key, at in self._admitted.items() if now - at <= self.max_age_s * 2}

    def _signer(self, headers: Headers, value: bytes | None, tenant_id: str, services_only: bool) -> str | None:
        keys = self.service_keys if services_only else (*self.keys.get(tenant_id, ()), *self.service_keys)
        return signed_with(headers, value, keys)
