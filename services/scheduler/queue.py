"""The backlog: per-tier fair queues with aging across tiers, indexed by shape for batching.

Ordering, in two steps:

1. *Inside a tier*, tenants share by start-time fair queueing weighted by tokens: a
   request's start tag is max(tier virtual time, its tenant's previous finish tag), and
   its finish tag adds its tokens. Serving the smallest start tag means a tenant with
   10,000 queued requests and a tenant arriving later with 10 alternate, instead of
   the later one waiting behind all 10,000.
2. *Across tiers*, each tier's best request competes by deadline = arrival +
   rank x aging_s (ties: lower rank). Interactive (rank 0) wins over batch (rank 2)
   unless the batch request arrived more than 2 x aging_s earlier: aging bounds
   starvation without weakening priority for fresh work.

Removal (cancel, expiry) is lazy: entries are marked and skipped when they surface.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from framebus.schemas.events import GenerationRequest
from framebus.schemas.state import Tier
from framebus.schemas.workers import Shape
from framebus.services.scheduler.config import SchedulerConfig


@dataclass(eq=False)
class QueuedRequest:
    request: GenerationRequest
    tokens: float
    shape: Shape
    enqueued_at: float  # scheduler clock, seconds
    start_tag: float  # fair-queueing start tag within the tier
    deadline: float  # enqueued_at + rank * aging_s: the cross-tier order
    seq: int  # arrival order, the last tie-breaker
    attempt: int = 1
    removed: bool = field(default=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.request.tenant_id, self.request.request_id)

    @cached_property
    def digest(self) -> str:
        """The request's digest, computed once: each of its status records carries it."""
        return self.request.digest()

    @property
    def tier(self) -> Tier:
        return self.request.tier


class RequestQueue:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._heaps: dict[tuple[Tier, Shape], list[tuple[float, int, QueuedRequest]]] = {}
        self._entries: dict[tuple[str, str], QueuedRequest] = {}
        self._arrivals: dict[Tier, deque[QueuedRequest]] = {tier: deque() for tier in Tier}
        self._virtual_time: dict[Tier, float] = {tier: 0.0 for tier in Tier}
        self._last_finish: dict[tuple[Tier, str], float] = {}
        self._depth: dict[Tier, int] = {tier: 0 for tier in Tier}
        self._shape_depth: dict[Shape, int] = {}
        self._next_seq = 0

    # --- membership ------------------------------------------------------------------
    def push(self, request: GenerationRequest, tokens: float, now: float, *, attempt: int = 1,
             previous: QueuedRequest | None = None) -> QueuedRequest:
        """Queue a request; ``previous`` re-queues one that a lost worker held, keeping its place."""
        tier = request.tier
        if previous is not None:
            entry = QueuedRequest(request, tokens, previous.shape, previous.enqueued_at, previous.start_tag,
                                  previous.deadline, previous.seq, attempt)
            # A restored entry still counts for its tenant's share and for arrival order.
            fair_key = (tier, request.tenant_id)
            self._last_finish[fair_key] = max(self._last_finish.get(fair_key, 0.0), entry.start_tag + max(tokens, 1e-6))
            self._next_seq = max(self._next_seq, entry.seq + 1)
        else:
            fair_key = (tier, request.tenant_id)
            start = max(self._virtual_time[tier], self._last_finish.get(fair_key, 0.0))
            self._last_finish[fair_key] = start + max(tokens, 1e-6)
            entry = QueuedRequest(request, tokens, Shape.of(request), now, start,
                                  now + self.config.policy(tier).rank * self.config.aging_s, self._next_seq, attempt)
            self._next_seq += 1
        self._entries[entry.key] = entry
        heapq.heappush(self._heaps.setdefault((tier, entry.shape), []), (entry.start_tag, entry.seq, entry))
        self._arrivals[tier].append(entry)
        self._depth[tier] += 1
        self._shape_depth[entry.shape] = self._shape_depth.get(entry.shape, 0) + 1
        return entry

    def remove(self, tenant_id: str, request_id: str) -> QueuedRequest | None:
        entry = self._entries.pop((tenant_id, request_id), None)
        if entry is not None:
            self._forget(entry)
        return entry

    def _forget(self, entry: QueuedRequest) -> None:
        entry.removed = True
        self._depth[entry.tier] -= 1
        self._shape_depth[entry.shape] -= 1

    def get(self, tenant_id: str, request_id: str) -> QueuedRequest | None:
        return self._entries.get((tenant_id, request_id))

    def depth(self, tier: Tier) -> int:
        return self._depth[tier]

    def oldest_wait(self, tier: Tier, now: float) -> float:
        """How long the tier's longest-queued request has waited (0 when none is queued). Read-only:
        /metrics calls it from its own thread (a concurrent change just skips that scrape)."""
        for entry in self._arrivals.get(tier, ()):
            if not entry.removed and self._entries.get(entry.key) is entry:
                return max(0.0, now - entry.enqueued_at)
        return 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[QueuedRequest]:
        return iter(list(self._entries.values()))

    # --- expiry -----------------------------------------------------------------------
    def pop_expired(self, now: float) -> list[QueuedRequest]:
        """Remove and return requests queued longer than their tier's TTL (oldest first)."""
        expired = []
        for tier, arrivals in self._arrivals.items():
            ttl = self.config.policy(tier).ttl_s
            while arrivals and (arrivals[0].removed or now - arrivals[0].enqueued_at >= ttl):
                entry = arrivals.popleft()
                if not entry.removed and self._entries.get(entry.key) is entry:
                    del self._entries[entry.key]
                    self._forget(entry)
                    expired.append(entry)
        return expired

    # --- selection ----------------------------------------------------------------------
    def _head(self, heap: list[tuple[float, int, QueuedRequest]]) -> QueuedRequest | None:
        while heap and heap[0][2].removed:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def waiting_shapes(self) -> list[Shape]:
        """Shapes with requests in the queue."""
        return [shape for shape, depth in self._shape_depth.items() if depth > 0]

    def of_shape(self, shape: Shape) -> list[QueuedRequest]:
        """The queued requests of ``shape``, in no particular order."""
        return [entry for (_, queued_shape), heap in self._heaps.items() if queued_shape == shape
                for _, _, entry in heap if not entry.removed]

    def best(self, accepts: Callable[[Shape], bool] = lambda _: True) -> QueuedRequest | None:
        """The request to serve next among the shapes ``accepts`` allows, without taking it."""
        per_tier: dict[Tier, QueuedRequest] = {}
        for (tier, shape), heap in self._heaps.items():
            if not accepts(shape):
                continue
            head = self._head(heap)
            if head is not None and (tier not in per_tier or (head.start_tag, head.seq) <
                                     (per_tier[tier].start_tag, per_tier[tier].seq)):
                per_tier[tier] = head
        if not per_tier:
            return None
        return min(per_tier.values(), key=lambda e: (e.deadline, self.config.policy(e.tier).rank, e.seq))

    def queued_of_shape(self, shape: Shape) -> int:
        return self._shape_depth.get(shape, 0)

    def batch_ready(self, head: QueuedRequest, limit: int, now: float) -> bool:
        """A batch closes when it would be full, or its best request has waited its tier's max wait."""
        return (self.queued_of_shape(head.shape) >= limit
                or now - head.enqueued_at >= self.config.policy(head.tier).max_wait_s)

    def take_batch(self, shape: Shape, limit: int) -> list[QueuedRequest]:
        """Remove up to ``limit`` requests of ``shape``, best first (the same order as ``best``)."""
        taken: list[QueuedRequest] = []
        while len(taken) < limit:
            entry = self.best(lambda s: s == shape)
            if entry is None:
                break
            heapq.heappop(self._heaps[(entry.tier, shape)])
            del self._entries[entry.key]
            self._forget(entry)
            self._virtual_time[entry.tier] = max(self._virtual_time[entry.tier], entry.start_tag)
            taken.append(entry)
        return taken
