"""Metering's decisions, pure: which ledger entries and usage records a result produces.

Who settles what:
- the scheduler settles every request it ends itself (refused at admission: nothing was
  reserved; expired or cancelled while queued: it writes the release);
- metering settles every request a worker ends: `completed` -> ``framebus.ledger.charged``
  (+ ``framebus.usage.recorded``), `failed` or `cancelled` -> ``framebus.ledger.released``.

Exactly once: entry ids are derived from tenant and request (``charge:t/r``,
``release:t/r``), and the ledger fold (``services.common.ledger.Balances``) settles a
request only once, whatever order or how often entries arrive. Metering folds the
whole ledger before it reads a result, applies its own entries at once, and skips any
result whose request is already settled: a redelivered result, a second result from a
worker that was declared dead, or a replay after a crash. A charge and a release of
the same request can never both count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framebus.schemas import sources
from framebus.schemas.events import (
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    LedgerCharged,
    LedgerReleased,
    UsageRecorded,
)
from framebus.services.common.ledger import Balances, LedgerEntry, charge_id, release_id

WORKER_SOURCE = sources.WORKER
Result = GenerationCompleted | GenerationFailed | GenerationCancelled


@dataclass
class Metered:
    ledger: list[LedgerEntry] = field(default_factory=list)
    usage: list[UsageRecorded] = field(default_factory=list)
    skipped: str | None = None  # why nothing was written


class Metering:
    def __init__(self) -> None:
        self.balances = Balances()

    def ledger(self, entry: LedgerEntry) -> None:
        self.balances.apply(entry)

    def result(self, result: Result, source: str) -> Metered:
        out = Metered()
        if source != WORKER_SOURCE:
            out.skipped = "ended by the scheduler, which settles it itself"
            return out
        if self.balances.is_settled(result.tenant_id, result.request_id):
            out.skipped = "already settled"
            return out
        common = {"tenant_id": result.tenant_id, "request_id": result.request_id, "tier": result.tier,
                  "model": result.model}
        usage = result.usage
        if isinstance(result, GenerationCompleted):
            entry = LedgerCharged(entry_id=charge_id(result.tenant_id, result.request_id), tokens=usage.tokens,
                                  gpu_seconds=usage.gpu_seconds, video_seconds=result.output.duration_s,
                                  machine=usage.machine, result_cache_hit=usage.result_cache_hit, **common)
            out.usage.append(UsageRecorded(
                tokens=usage.tokens,
                gpu_seconds=usage.gpu_seconds, video_seconds=result.output.duration_s, width=result.output.width,
                height=result.output.height, num_frames=result.output.num_frames,
                num_inference_steps=usage.steps_run, request_id=result.request_id, tenant_id=result.tenant_id,
                tier=result.tier, model=result.model))
        else:
            reserved = self.balances.reserved_for(result.tenant_id, result.request_id)
            tokens = reserved if reserved is not None else (usage.tokens if usage is not None else 0.0)
            reason = result.error.code.value if isinstance(result, GenerationFailed) else result.reason
            entry = LedgerReleased(entry_id=release_id(result.tenant_id, result.request_id), tokens=tokens,
                                   reason=reason[:512], outcome=result.outcome,
                                   gpu_seconds=usage.gpu_seconds if usage is not None else 0.0,
                                   machine=usage.machine if usage is not None else None, **common)
        self.balances.apply(entry)
        out.ledger.append(entry)
        return out
