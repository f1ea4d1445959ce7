"""Tenant balances: a fold over framebus.ledger, idempotent on each entry.

    available = credited + credit_limit - reserved_outstanding - charged

A reservation is outstanding until metering charges or releases the same request; a
charge or release settles the reservation of that request only once, whatever order
or how often the entries arrive. A request's entries dedupe by the request (settled, or
holding); other entries (credits) by their id. Both are kept for the dedupe window only
(``forget_before``), and the fold of a whole partition is written now and then as a
snapshot (``services.common.ledger_snapshots``), so neither memory nor start-up grows
with the ledger's history.
"""

from __future__ import annotations

import copy
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


def _derived(entry: LedgerEntry) -> bool:
    made = {LedgerReserved: reserve_id, LedgerCharged: charge_id, LedgerReleased: release_id}[type(entry)]
    return entry.entry_id == made(entry.tenant_id, entry.request_id)


def _d(tokens: float) -> Decimal:
    # Tokens are quoted to 0.001; Decimal keeps sums exact where floats would drift.
    return Decimal(repr(tokens))


@dataclass
class TenantBalance:
    credited: Decimal = Decimal(0)
    charged: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)  # the sum of ``reservations``, kept current (admission reads it per request)
    reservations: dict[str, Decimal] = field(default_factory=dict)  # request id -> tokens held
    # What dedupes, each with its entry's time (epoch seconds), kept for the dedupe window only:
    settled: dict[str, float] = field(default_factory=dict)  # request id -> charged or released at
    entries: dict[str, float] = field(default_factory=dict)  # entry id -> folded entry's time

    def hold(self, request_id: str, tokens: Decimal) -> None:
        self.reserved += tokens - self.reservations.get(request_id, Decimal(0))
        self.reservations[request_id] = tokens

    def settle(self, request_id: str) -> None:
        self.reserved -= self.reservations.pop(request_id, Decimal(0))

    def available(self, credit_limit: float = 0.0) -> Decimal:
        return self.credited + _d(credit_limit) - self.reserved - self.charged

    def forget_before(self, cutoff: float) -> None:
        self.settled = {request: at for request, at in self.settled.items() if at >= cutoff}
        self.entries = {entry: at for entry, at in self.entries.items() if at >= cutoff}


class Balances:
    """The fold. Memory is bounded by the dedupe window, not by history: ``forget_before``
    drops what dedupes entries older than the window (a request settled then cannot be
    settled again later than that: its results and replays are long gone), while credits,
    charges and open reservations are kept as sums."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantBalance] = {}

    def of(self, tenant_id: str) -> TenantBalance:
        return self._tenants.setdefault(tenant_id, TenantBalance())

    def apply(self, entry: LedgerEntry) -> bool:
        """Fold one entry; False if it was already folded (a redelivery, or a request's second settlement)."""
        balance = self.of(entry.tenant_id)
        if entry.entry_id in balance.entries:
            return False
        at = entry.at.timestamp()
        if isinstance(entry, LedgerCredited):
            balance.entries[entry.entry_id] = at
            balance.credited += _d(entry.tokens)
            return True
        if not _derived(entry):  # ids derived from the request dedupe by the request below, at no extra memory
            balance.entries[entry.entry_id] = at
        if isinstance(entry, LedgerReserved):
            if entry.request_id in balance.settled or entry.request_id in balance.reservations:
                return False
            balance.hold(entry.request_id, _d(entry.tokens))
            return True
        if entry.request_id in balance.settled:
            return False
        balance.settled[entry.request_id] = at
        balance.settle(entry.request_id)
        if isinstance(entry, LedgerCharged):
            balance.charged += _d(entry.tokens)
        return True

    def is_settled(self, tenant_id: str, request_id: str) -> bool:
        """Charged or released already (by anyone)."""
        held = self._tenants.get(tenant_id)
        return held is not None and request_id in held.settled

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

    def forget_before(self, cutoff: float) -> None:
        """Drop what dedupes entries whose time is before ``cutoff`` (epoch seconds)."""
        for balance in self._tenants.values():
            balance.forget_before(cutoff)

    def deduping(self) -> int:
        """Entries and settled requests held for deduplication (what the window bounds)."""
        return sum(len(b.settled) + len(b.entries) for b in self._tenants.values())

    # --- snapshots (framebus.ledger.snapshots) ----------------------------------------------
    def snapshot(self, tenant_ids) -> dict[str, TenantBalance]:
        """The named tenants' state: copies, so the fold may go on while they are written."""
        return {t: copy.deepcopy(self._tenants[t]) for t in tenant_ids if t in self._tenants}

    def load(self, tenants: dict[str, TenantBalance]) -> None:
        """Start from a snapshot's tenants (their partition's entries after it are folded next)."""
        for tenant_id, balance in tenants.items():
            self._tenants[tenant_id] = copy.deepcopy(balance)
