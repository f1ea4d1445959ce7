"""Are this service's Kafka clients alive? The verdict a watchdog acts on (pure: no I/O).

A client library can stay wedged after a broker outage while its process runs on. Seen here
after broker restarts: a worker's kafka-python producer never delivered a heartbeat again, and
the scheduler's aiokafka consumer never rejoined its group; nothing exited, so no supervisor
restarted them. Silence alone does not tell a wedge from an outage, so once a service has
heard nothing from the broker for ``stall_s``, its watchdog asks the broker over a fresh
connection (``framebus.kafka.broker_answers``):

- the broker does not answer: it is down; the service waits, alive but not ready (restarting
  every service during an outage helps no one);
- the broker answers, and has been answering for ``stall_s`` while our clients still made no
  progress: they are wedged. The service says so on /healthz and exits non-zero, and its
  supervisor (Kubernetes, compose, `framebus demo`) starts a fresh one, which rebuilds from Kafka.

"Progress" is whatever proves a round trip: an acknowledged send, a fetch response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ClientHealth(StrEnum):
    LIVE = "live"  # the clients made progress recently
    BROKER_DOWN = "broker_down"  # silence, and the broker does not answer a fresh connection either
    RECONNECTING = "reconnecting"  # the broker answers again; our clients still have time to catch up
    WEDGED = "wedged"  # silence while the broker has answered for stall_s: restart the service


@dataclass(frozen=True)
class WatchdogConfig:
    stall_s: float = 30.0  # silence this long (while the broker answers) is a wedge
    probe_interval_s: float = 5.0  # how often a silent service asks the broker

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.probe_interval_s <= 0:
            raise ValueError(f"`stall_s` and `probe_interval_s` must be positive but are {self.stall_s} "
                             f"and {self.probe_interval_s}")


class ClientWatch:
    """Fed with progress and probe answers; says whether to probe and what the clients' health is."""

    def __init__(self, config: WatchdogConfig, now: float) -> None:
        self.config = config
        self.last_progress = now  # start-up counts as progress: the clients just connected
        self.last_probe: float | None = None
        self.last_unanswered: float | None = None  # the latest probe the broker did not answer
        self.health = ClientHealth.LIVE

    def progressed(self, at: float) -> None:
        if at > self.last_progress:
            self.last_progress = at
            self.health = ClientHealth.LIVE

    def silent_for(self, now: float) -> float:
        return now - self.last_progress

    def should_probe(self, now: float) -> bool:
        if self.silent_for(now) < self.config.stall_s:
            return False
        return self.last_probe is None or now - self.last_probe >= self.config.probe_interval_s

    def probed(self, now: float, answered: bool) -> ClientHealth:
        """Record a probe's answer and return the verdict."""
        self.last_probe = now
        if self.silent_for(now) < self.config.stall_s:
            self.health = ClientHealth.LIVE  # progress came in while the probe ran
        elif not answered:
            self.last_unanswered = now
            self.health = ClientHealth.BROKER_DOWN
        else:
            # Silent while the broker has answered for stall_s: after an outage our clients get
            # that long to reconnect, counted from the last probe the broker did not answer.
            back_since = max(self.last_progress, self.last_unanswered or self.last_progress)
            wedged = now - back_since >= self.config.stall_s
            self.health = ClientHealth.WEDGED if wedged else ClientHealth.RECONNECTING
        return self.health

    def describe(self, now: float) -> str:
        if self.health is ClientHealth.WEDGED:
            return (f"no progress with Kafka for {self.silent_for(now):.0f}s while the broker answers a fresh "
                    "connection: the clients are wedged")
        if self.health is ClientHealth.BROKER_DOWN:
            return f"no progress with Kafka for {self.silent_for(now):.0f}s: the broker does not answer"
        if self.health is ClientHealth.RECONNECTING:
            return f"no progress with Kafka for {self.silent_for(now):.0f}s; the broker answers again"
        return "clients live"
