"""Tenant balances: a fold over framebus.ledger, idempotent on each entry's id.

    available = credited + credit_limit - reserved_outstanding - charged

A reservation is outstanding until metering charges or releases the same request; a
charge or release settles the reservation of that request only once, whatever order
or how often the entries arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from framebus.schemas.events import LedgerCharged, LedgerCredited, LedgerReleased, LedgerReserved

LedgerEntry = LedgerCredited | LedgerReserved | LedgerCharged | LedgerReleased


# Entry ids, derived from tenant and request: the fold settles each request once by them,
# whoever writes the entry (the scheduler reserves and releases, metering charges and releases).
def reserve_id(tenant_id: str, request_id: str) -> str:
    return f"reserve:{tenant_id}/{request_id}"


def charge_id(tenant_id: str, request_id: str) -> str:
    return f"charge:{tenant_id}/{request_id}"


def release_id(tenant_id: str, request_id: str) -> str:
    return f"release:{tenant_id}/{request_id}"


def _d(tokens: float) -> Decimal:
    # Tokens are quoted to 0.001; Decimal keeps sums exact where floats would drift.
    return Decimal(repr(tokens))


@dataclass
class TenantBalance:
    credited: Decimal = Decimal(0)
    charged: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)  # the sum of ``reservations``, kept current (admission reads it per request)
    reservations: dict[str, Decimal] = field(default_factory=dict)  # request id -> tokens held

    def hold(self, request_id: str, tokens: Decimal) -> None:
        self.reserved += tokens - self.reservations.get(request_id, Decimal(0))
        self.reservations[request_id] = tokens

    def settle(self, request_id: str) -> None:
        self.reserved -= self.reservations.pop(request_id, Decimal(0))

    def available(self, credit_limit: float = 0.0) -> Decimal:
        return self.credited + _d(credit_limit) - self.reserved - self.charged


class Balances:
    def __init__(self) -> None:
        self._tenants: dict[str, TenantBalance] = {}
        self._seen_entries: set[str] = set()
        self._settled: set[tuple[str, str]] = set()  # (tenant, request) charged or released

    def of(self, tenant_id: str) -> TenantBalance:
        return self._tenants.setdefault(tenant_id, TenantBalance())

    def apply(self, entry: LedgerEntry) -> bool:
        """Fold one entry; False if its entry id was already folded (a redelivery)."""
        if entry.entry_id in self._seen_entries:
            return False
        self._seen_entries.add(entry.entry_id)
        balance = self.of(entry.tenant_id)
        if isinstance(entry, LedgerCredited):
            balance.credited += _d(entry.tokens)
        elif isinstance(entry, LedgerReserved):
            if (entry.tenant_id, entry.request_id) not in self._settled:
                balance.hold(entry.request_id, _d(entry.tokens))
        else:
            key = (entry.tenant_id, entry.request_id)
            if key in self._settled:
                return False
            self._settled.add(key)
            balance.settle(entry.request_id)
            if isinstance(entry, LedgerCharged):
                balance.charged += _d(entry.tokens)
        return True

    def is_settled(self, tenant_id: str, request_id: str) -> bool:
        """Charged or released already (by anyone)."""
        return (tenant_id, request_id) in self._settled

    def reserved_for(self, tenant_id: str, request_id: str) -> float | None:
        """Tokens held for this request, or None if no reservation is outstanding."""
        held = self._tenants.get(tenant_id)
        tokens = held.reservations.get(request_id) if held is not None else None
        return float(tokens) if tokens is not None else None

    def tenants(self) -> dict[str, TenantBalance]:
        return dict(self._tenants)

    def holds(self, tenant_id: str, request_id: str) -> bool:
        """True if a reservation for this request is already folded (a replay after a crash)."""
        return request_id in self.of(tenant_id).reservations

    def can_reserve(self, tenant_id: str, tokens: float, credit_limit: float) -> bool:
        return self.of(tenant_id).available(credit_limit) >= _d(tokens)
