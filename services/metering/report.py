"""Usage and cost reports: a pure fold over ledger settlements, grouped into windows.

The ledger is the system of record: every settled request is one `charged` or one
`released` entry carrying its tier, model, tokens, GPU seconds and machine kind. Folding
those (first settlement of a request wins, repeats of an entry id count once) gives
exact totals however often entries were redelivered. Hourly and daily windows are
tumbling windows on the settlement time (``group_by="hour"`` / ``"day"``).

    revenue   = tokens / 1000 x price_per_1k_tokens x tier factor      (the price book)
    gpu cost  = gpu_seconds / 3600 x the machine kind's hourly cost      (the cost model)
    margin    = revenue - gpu cost;  cost per video = gpu cost / completed videos
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from framebus.schemas.events import LedgerCharged, LedgerReleased
from framebus.services.common.settings import Settings

GroupBy = Literal["tier", "model", "day", "hour", "tenant"]
CENT = Decimal("0.0001")


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


@dataclass(frozen=True)
class PriceBook:
    currency: str
    per_1k_tokens: Decimal
    tier_factors: dict[str, Decimal]

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceBook:
        return cls(settings.currency, _d(settings.price_per_1k_tokens),
                   {tier: _d(factor) for tier, factor in settings.tier_price_factors.items()})

    def revenue(self, tokens: Decimal, tier: str | None) -> Decimal:
        return tokens / 1000 * self.per_1k_tokens * self.tier_factors.get(tier or "standard", Decimal(1))


@dataclass(frozen=True)
class CostModel:
    per_gpu_hour: dict[str, Decimal]

    @classmethod
    def from_settings(cls, settings: Settings) -> CostModel:
        return cls({kind: _d(cost) for kind, cost in settings.gpu_hour_costs.items()})

    def cost(self, gpu_seconds: Decimal, machine: str | None) -> Decimal:
        return gpu_seconds / 3600 * self.hourly(machine)

    def hourly(self, machine: str | None) -> Decimal:
        """The price of an hour on ``machine``: its own key, else the longest key its detected name
        contains (a worker reports ``nvidia-h100-80gb-hbm3``, the price book says ``h100``), else ``default``."""
        name = (machine or "default").lower()
        if name in self.per_gpu_hour:
            return self.per_gpu_hour[name]
        known = sorted((kind for kind in self.per_gpu_hour if kind != "default" and kind.lower() in name), key=len)
        return self.per_gpu_hour[known[-1]] if known else self.per_gpu_hour.get("default", Decimal(0))


@dataclass
class Tally:
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    cache_hits: int = 0
    tokens: Decimal = Decimal(0)  # charged
    released_tokens: Decimal = Decimal(0)
    video_seconds: Decimal = Decimal(0)
    gpu_seconds: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)
    gpu_cost: Decimal = Decimal(0)

    @property
    def requests(self) -> int:
        return self.completed + self.failed + self.cancelled + self.expired

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.gpu_cost

    @property
    def cost_per_video(self) -> Decimal | None:
        return self.gpu_cost / self.completed if self.completed else None

    def add(self, other: Tally) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self, currency: str) -> dict:
        money = lambda value: str(value.quantize(CENT, ROUND_HALF_UP))  # noqa: E731
        return {"requests": self.requests, "completed": self.completed, "failed": self.failed,
                "cancelled": self.cancelled, "expired": self.expired, "result_cache_hits": self.cache_hits,
                "tokens": float(self.tokens), "released_tokens": float(self.released_tokens),
                "video_seconds": float(self.video_seconds), "gpu_seconds": float(self.gpu_seconds),
                "currency": currency, "revenue": money(self.revenue), "gpu_cost": money(self.gpu_cost),
                "margin": money(self.margin),
                "cost_per_video": None if self.cost_per_video is None else money(self.cost_per_video)}


@dataclass
class UsageReport:
    prices: PriceBook
    costs: CostModel
    tenant_id: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    group_by: GroupBy | None = None
    groups: dict[str, Tally] = field(default_factory=dict)
    _settled: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, entry) -> None:
        if not isinstance(entry, (LedgerCharged, LedgerReleased)):
            return
        key = (entry.tenant_id, entry.request_id)
        if key in self._settled:  # a redelivery, or the other settlement of a request already settled
            return
        self._settled.add(key)
        if self.tenant_id is not None and entry.tenant_id != self.tenant_id:
            return
        if (self.start is not None and entry.at < self.start) or (self.end is not None and entry.at >= self.end):
            return
        tally = self.groups.setdefault(self._group(entry), Tally())
        gpu = _d(entry.gpu_seconds)
        tally.gpu_seconds += gpu
        tally.gpu_cost += self.costs.cost(gpu, entry.machine)
        if isinstance(entry, LedgerCharged):
            tokens = _d(entry.tokens)
            tally.completed += 1
            tally.cache_hits += entry.result_cache_hit
            tally.tokens += tokens
            tally.video_seconds += _d(entry.video_seconds)
            tally.revenue += self.prices.revenue(tokens, entry.tier.value if entry.tier else None)
        else:
            tally.released_tokens += _d(entry.tokens)
            outcome = entry.outcome or "failed"
            setattr(tally, outcome, getattr(tally, outcome) + 1)

    def fold(self, entries: Iterable) -> UsageReport:
        for entry in entries:
            self.add(entry)
        return self

    def _group(self, entry) -> str:
        match self.group_by:
            case "tier":
                return entry.tier.value if entry.tier else "unknown"
            case "model":
                return entry.model.value if entry.model else "unknown"
            case "day":
                return f"{entry.at:%Y-%m-%d}"
            case "hour":
                return f"{entry.at:%Y-%m-%dT%H:00Z}"
            case "tenant":
                return entry.tenant_id
            case _:
                return "all"

    def rows(self) -> list[tuple[str, Tally]]:
        return sorted(self.groups.items())

    def total(self) -> Tally:
        total = Tally()
        for tally in self.groups.values():
            total.add(tally)
        return total
