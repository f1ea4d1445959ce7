"""How many generator workers a tier needs: one arithmetic for `framebus scale advise` and for the
KEDA ScaledObjects in infra/k8s (a test holds the manifests to ``keda_triggers``).

A tier's workers must (1) keep up with arrivals without running hotter than the tier's
utilisation ceiling, and (2) clear what is already queued within the tier's latency target:

    workers = max(ceil(arrival_rate / (service_rate * utilisation)),
                  ceil(queue_depth / max(1, service_rate * latency_target_s)))

clamped to the tier's bounds, where ``service_rate`` is the videos per second one worker
finishes (measured from its results, batch size included); a worker starts at least one
queued request within the target even when a video takes longer than the target. KEDA's Prometheus scaler computes
``ceil(metric / threshold)`` per trigger and takes the largest, so each term is one trigger:
the admission rate over ``service_rate * utilisation``, and the queue depth over
``max(1, service_rate * latency_target_s)``; a third trigger on the oldest wait scales out a tier
whose queue is small but stuck (a wait past the target asks for one more worker per target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from framebus.schemas.topics import REQUEST_TIERS


@dataclass(frozen=True)
class TierScaling:
    tier: str
    latency_target_s: float  # the queue wait a request of this tier should see
    utilisation: float  # the busy share a worker may run at before the tier adds one
    min_workers: int
    max_workers: int
    cooldown_s: int  # KEDA cooldownPeriod: how long a tier stays scaled after its load goes
    polling_s: int  # how often KEDA asks Prometheus


# Interactive: scale out early and fast, never to zero. Standard: minutes are fine. Batch: may
# queue overnight, runs hot, and goes to zero workers when there is nothing to do.
TIERS: dict[str, TierScaling] = {
    "interactive": TierScaling("interactive", latency_target_s=10.0, utilisation=0.6, min_workers=1, max_workers=20,
                               cooldown_s=600, polling_s=15),
    "standard": TierScaling("standard", latency_target_s=120.0, utilisation=0.8, min_workers=1, max_workers=20,
                            cooldown_s=300, polling_s=30),
    "batch": TierScaling("batch", latency_target_s=8 * 3600.0, utilisation=0.95, min_workers=0, max_workers=50,
                         cooldown_s=900, polling_s=60),
}
assert set(TIERS) == set(REQUEST_TIERS)

# What one GPU worker finishes per second when nothing better is known: the manifests' thresholds
# are written for it (wan2.1-t2v-1.3b at 480p, 50 steps, on one L40S-class GPU: about 2 videos a minute).
ASSUMED_SERVICE_RATE = 2 / 60


def workers_needed(scaling: TierScaling, *, arrival_rate: float, queue_depth: float, service_rate: float,
                   oldest_wait_s: float = 0.0) -> int:
    """Workers the tier needs now (see the module's formula), within its bounds."""
    if service_rate <= 0:
        raise ValueError(f"`service_rate` must be positive but is {service_rate}")
    keep_up = math.ceil(arrival_rate / (service_rate * scaling.utilisation) - 1e-9)
    drain = math.ceil(queue_depth / _per_worker_within_target(scaling, service_rate) - 1e-9)
    stuck = math.ceil(oldest_wait_s / scaling.latency_target_s - 1e-9) if oldest_wait_s > scaling.latency_target_s else 0
    return max(scaling.min_workers, min(scaling.max_workers, max(keep_up, drain, stuck)))


def keda_triggers(scaling: TierScaling, service_rate: float = ASSUMED_SERVICE_RATE) -> dict[str, dict[str, str]]:
    """The Prometheus trigger of each term, as a ScaledObject writes it (query and threshold)."""
    tier = scaling.tier
    return {
        "arrivals": {"query": f'sum(rate(framebus_admissions_total{{tier="{tier}",decision="queued"}}[2m]))',
                     "threshold": _number(service_rate * scaling.utilisation)},
        "backlog": {"query": f'sum(framebus_queue_depth{{tier="{tier}"}})',
                    "threshold": _number(_per_worker_within_target(scaling, service_rate))},
        "oldest_wait": {"query": f'max(framebus_queue_oldest_wait_seconds{{tier="{tier}"}})',
                        "threshold": _number(scaling.latency_target_s)},
    }


def _per_worker_within_target(scaling: TierScaling, service_rate: float) -> float:
    """Queued requests one worker clears within the tier's target (at least the one it starts now)."""
    return max(1.0, service_rate * scaling.latency_target_s)


def _number(value: float) -> str:
    """A threshold as KEDA reads it (a string), rounded so a manifest can say it."""
    return f"{round(value, 4):g}"


# --- `framebus scale advise` ---------------------------------------------------------------------
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class TierLoad:
    """What a tier sees now: requests per second arriving, requests queued, the longest wait."""

    arrival_rate: float
    queue_depth: int
    oldest_wait_s: float


@dataclass(frozen=True)
class TierAdvice:
    tier: str
    load: TierLoad
    workers: int
    utilisation: float  # the busy share the advised workers would run at for the arrivals


def advise(loads: dict[str, TierLoad], service_rate: float) -> list[TierAdvice]:
    """Workers per tier for ``loads`` at ``service_rate`` videos per busy worker-second."""
    out = []
    for tier, scaling in TIERS.items():
        load = loads.get(tier, TierLoad(0.0, 0, 0.0))
        workers = workers_needed(scaling, arrival_rate=load.arrival_rate, queue_depth=load.queue_depth,
                                 service_rate=service_rate, oldest_wait_s=load.oldest_wait_s)
        busy = load.arrival_rate / (service_rate * workers) if workers else 0.0
        out.append(TierAdvice(tier, load, workers, busy))
    return out


def cost_per_video(gpu_price_per_hour: float, service_rate: float, utilisation: float) -> float:
    """What a video costs when workers run ``utilisation`` of their time (idle time is paid too)."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"`utilisation` must be in (0, 1] but is {utilisation}")
    return gpu_price_per_hour / (3600.0 * service_rate * utilisation)


def break_even_videos_per_month(*, gpu_price_per_hour: float, api_price_per_video: float, service_rate: float,
                                utilisation: float, always_on_workers: int) -> float | None:
    """Monthly videos above which framebus costs less than a hosted API at ``api_price_per_video``:
    the always-on workers are paid whatever the volume, each further video costs
    ``cost_per_video`` at ``utilisation``. None when framebus never costs less (its per-video
    cost at that utilisation is the API's price or more)."""
    marginal = cost_per_video(gpu_price_per_hour, service_rate, utilisation)
    if marginal >= api_price_per_video:
        return None
    fixed = always_on_workers * gpu_price_per_hour * HOURS_PER_MONTH
    capacity = always_on_workers * service_rate * utilisation * 3600.0 * HOURS_PER_MONTH  # what they can serve
    volume = fixed / api_price_per_video
    if volume <= capacity:
        return volume
    # Past the always-on fleet each video costs `marginal`: the API's line crosses later.
    return (fixed - capacity * marginal) / (api_price_per_video - marginal)
