"""The scheduler's policy knobs: frozen; the defaults are docs/design.md's tier table, and operators
set TTLs, queue caps and the unserved grace through FRAMEBUS_SCHEDULER_* settings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from framebus.schemas.state import Tier


@dataclass(frozen=True)
class TierPolicy:
    rank: int  # 0 is served first
    max_wait_s: float  # longest a partial batch is held for more requests of its shape
    ttl_s: float  # a request still queued this long after acceptance fails with `expired`
    max_queued: int  # beyond this the tier rejects with `queue_full`


DEFAULT_TIERS: dict[Tier, TierPolicy] = {
    Tier.INTERACTIVE: TierPolicy(rank=0, max_wait_s=0.03, ttl_s=300.0, max_queued=1_000),
    Tier.STANDARD: TierPolicy(rank=1, max_wait_s=0.3, ttl_s=3_600.0, max_queued=20_000),
    Tier.BATCH: TierPolicy(rank=2, max_wait_s=3.0, ttl_s=86_400.0, max_queued=200_000),
}


@dataclass(frozen=True)
class SchedulerConfig:
    tiers: dict[Tier, TierPolicy] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    # Aging: each tier rank is worth `aging_s` of waiting. A request's deadline is its
    # arrival time + rank * aging_s; the earliest deadline is served first. So a batch
    # request (rank 2) overtakes an interactive one that arrived more than 2 * aging_s
    # after it, and no tier can starve another for longer than that.
    aging_s: float = 60.0
    dedupe_window_s: float = 7 * 24 * 3600.0
    worker_timeout_s: float = 10.0  # no heartbeat for this long: the worker is declared dead
    unserved_grace_s: float = 120.0  # no live worker takes a request's model this long: `model_unavailable`
    unreported_grace_s: float = 60.0  # a job its worker let go of, with requests still unreported: `worker_lost`
    # After the scheduler could not hear Kafka, no worker lapses for this long: a worker's clients
    # get as long to reconnect as its own watchdog gives them (client_stall_s) before it exits.
    reconnect_grace_s: float = 30.0

    def policy(self, tier: Tier) -> TierPolicy:
        return self.tiers[tier]

    @classmethod
    def of(cls, *, ttl_s: dict[str, float] | None = None, max_queued: dict[str, int] | None = None,
           **knobs) -> SchedulerConfig:
        """The defaults with per-tier TTLs and queue caps replaced where given (by tier name)."""
        tiers = {tier: replace(policy, ttl_s=(ttl_s or {}).get(tier.value, policy.ttl_s),
                               max_queued=(max_queued or {}).get(tier.value, policy.max_queued))
                 for tier, policy in DEFAULT_TIERS.items()}
        return cls(tiers=tiers, **knobs)
