"""How many generator workers a tier needs: one arithmetic for `framebus scale advise` and for the
KEDA ScaledObjects in infra/k8s (a test holds the manifests to ``keda_triggers``).

A tier's workers must (1) keep up with arrivals without running hotter than the tier's
utilisation ceiling, and (2) clear what is already queued within the tier's latency target:

    workers = max(ceil(arrival_rate / (service_rate * utilisation)),
                  ceil(queue_depth / (service_rate * latency_target_s)))

clamped to the tier's bounds, where ``service_rate`` is the videos per second one worker
finishes (measured from its results, batch size included). KEDA's Prometheus scaler computes
``ceil(metric / threshold)`` per trigger and takes the largest, so each term is one trigger:
the admission rate over ``service_rate * utilisation``, and the queue depth over
``service_rate * latency_target_s``; a third trigger on the oldest wait scales out a tier
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
    drain = math.ceil(queue_depth / (service_rate * scaling.latency_target_s) - 1e-9)
    stuck = math.ceil(oldest_wait_s / scaling.latency_target_s - 1e-9) if oldest_wait_s > scaling.latency_target_s else 0
    return max(scaling.min_workers, min(scaling.max_workers, max(keep_up, drain, stuck)))


def keda_triggers(scaling: TierScaling, service_rate: float = ASSUMED_SERVICE_RATE) -> dict[str, dict[str, str]]:
    """The Prometheus trigger of each term, as a ScaledObject writes it (query and threshold)."""
    tier = scaling.tier
    return {
        "arrivals": {"query": f'sum(rate(framebus_admissions_total{{tier="{tier}",decision="queued"}}[2m]))',
                     "threshold": _number(service_rate * scaling.utilisation)},
        "backlog": {"query": f'sum(framebus_queue_depth{{tier="{tier}"}})',
                    "threshold": _number(service_rate * scaling.latency_target_s)},
        "oldest_wait": {"query": f'max(framebus_queue_oldest_wait_seconds{{tier="{tier}"}})',
                        "threshold": _number(scaling.latency_target_s)},
    }


def _number(value: float) -> str:
    """A threshold as KEDA reads it (a string), rounded so a manifest can say it."""
    return f"{round(value, 4):g}"
