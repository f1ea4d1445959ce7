"""Admission: the first decision on a decoded request. Pure: no Kafka, clock passed in.

Order of checks (the first that fails decides the reason): a duplicate id is dropped;
an unknown or disabled tenant, a full tier queue, or too small a balance fail the
request with a machine-readable code. An admitted request has its tokens reserved.
"""

from __future__ import annotations

from dataclasses import dataclass

from framebus.schemas.events import GenerationRequest, TenantUpdated
from framebus.schemas.state import ErrorCode
from framebus.services.common.ledger import Balances
from framebus.services.scheduler.config import SchedulerConfig


@dataclass(frozen=True)
class Admit:
    tokens: float


@dataclass(frozen=True)
class Refuse:
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Duplicate:
    """Seen before within the dedupe window: drop it, re-publish its current status."""


Decision = Admit | Refuse | Duplicate


class DedupeIndex:
    """(tenant, request id) pairs seen within a window; the window bounds memory."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: dict[tuple[str, str], float] = {}

    def seen(self, tenant_id: str, request_id: str, now: float) -> bool:
        first = self._seen.get((tenant_id, request_id))
        return first is not None and now - first < self.window_s

    def remember(self, tenant_id: str, request_id: str, now: float) -> None:
        self._seen.setdefault((tenant_id, request_id), now)

    def expire(self, now: float) -> None:
        self._seen = {key: at for key, at in self._seen.items() if now - at < self.window_s}


def decide(request: GenerationRequest, *, tenant: TenantUpdated | None, balances: Balances, dedupe: DedupeIndex,
           queued_in_tier: int, config: SchedulerConfig, now: float) -> Decision:
    if dedupe.seen(request.tenant_id, request.request_id, now):
        return Duplicate()
    if tenant is None:
        return Refuse(ErrorCode.UNKNOWN_TENANT, f"tenant {request.tenant_id!r} does not exist")
    if tenant.disabled:
        return Refuse(ErrorCode.UNKNOWN_TENANT, f"tenant {request.tenant_id!r} is disabled")
    policy = config.policy(request.tier)
    if queued_in_tier >= policy.max_queued:
        return Refuse(ErrorCode.QUEUE_FULL,
                      f"the {request.tier.value} queue holds its maximum of {policy.max_queued} requests")
    tokens = request.quote()
    if balances.holds(request.tenant_id, request.request_id):
        return Admit(tokens)  # reserved before a crash; reserving again would count it twice
    if not balances.can_reserve(request.tenant_id, tokens, tenant.credit_limit_tokens):
        available = balances.of(request.tenant_id).available(tenant.credit_limit_tokens)
        return Refuse(ErrorCode.INSUFFICIENT_BALANCE,
                      f"request needs {tokens:g} tokens but tenant {request.tenant_id!r} has {available} available")
    return Admit(tokens)
