"""The topic catalogue: every framebus topic, its key, partitions, retention and event types.

This is the one place topic names live. ``framebus up`` creates these topics, the
README's catalogue table is rendered from them, and services look names up here.
Partition counts are the local/CI defaults; production clusters may create more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000
SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024  # a ledger snapshot record, before compression


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"
    # The latest value per key, and only while it is younger than the retention: state that
    # matters for a while (a request's status), not forever.
    COMPACT_DELETE = "compact,delete"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key is, so partitioning is explicit
    partitions: int
    purpose: str
    event_types: tuple[str, ...] = ()
    cleanup: Cleanup = Cleanup.DELETE
    retention_ms: int = 7 * DAY_MS  # -1 keeps records forever
    extra_config: tuple[tuple[str, str], ...] = field(default=())
    # The Settings field (in days) the retention comes from, where an operator sets it; ``retention_ms``
    # is then that setting's default, and ``catalogue()`` fills in the configured value.
    retention_setting: str | None = None

    def configs(self) -> dict[str, str]:
        """Topic-level configs passed to CreateTopics."""
        configs = {"cleanup.policy": self.cleanup.value, "retention.ms": str(self.retention_ms)}
        if self.cleanup is Cleanup.COMPACT:
            # Compacted topics keep the latest value per key forever; retention does not apply.
            configs["retention.ms"] = "-1"
        if self.cleanup in (Cleanup.COMPACT, Cleanup.COMPACT_DELETE):
            configs["min.cleanable.dirty.ratio"] = "0.1"
            configs["segment.ms"] = str(60 * 60 * 1000)
        configs.update(dict(self.extra_config))
        return configs


REQUEST_TIERS = ("interactive", "standard", "batch")

_REQUEST_TOPICS = tuple(
    TopicSpec(f"framebus.requests.{tier}", "tenant id", 6,
              f"Generation requests of the {tier} tier, as published by producers.",
              ("framebus.generation.requested",))
    for tier in REQUEST_TIERS
)

CATALOGUE: tuple[TopicSpec, ...] = (
    *_REQUEST_TOPICS,
    TopicSpec("framebus.requests.rejected", "tenant id", 3,
              "Records the scheduler refused, with the reason, kept for a month.",
              ("framebus.generation.requested",), retention_ms=30 * DAY_MS),
    TopicSpec("framebus.control", "tenant id", 6,
              "Control commands: cancels, and requests a stopping worker hands back.",
              ("framebus.control.cancel", "framebus.control.returned")),
    TopicSpec("framebus.workers", "worker id", 1,
              "Worker announcements: warm model, accepted shapes, free slots, heartbeat.",
              ("framebus.worker.announced",), retention_ms=DAY_MS),
    TopicSpec("framebus.jobs", "worker id", 6,
              "One record = one batch dispatched to one worker; also cancels forwarded to that worker.",
              ("framebus.job.dispatched", "framebus.control.cancel")),
    TopicSpec("framebus.jobs.dead", "worker id", 1,
              "Job records a worker could not read, as they came plus the reason, kept for a month.",
              ("framebus.job.dispatched",), retention_ms=30 * DAY_MS),
    TopicSpec("framebus.results", "tenant id", 6, "Terminal outcome of each request, with usage and output.",
              ("framebus.generation.completed", "framebus.generation.failed", "framebus.generation.cancelled")),
    TopicSpec("framebus.results.dead", "tenant id", 1,
              "Result records metering could not read, as they came plus the reason, kept for a month.",
              ("framebus.generation.completed",), retention_ms=30 * DAY_MS),
    # Compacted, and deleted once older than FRAMEBUS_STATUS_RETENTION_DAYS: the gateway reads only
    # that window at start, so its start-up and memory follow the window, not all history.
    TopicSpec("framebus.status", "tenant/request id", 6,
              "Latest state of every request (compacted), while statuses are kept.",
              ("framebus.generation.status",), cleanup=Cleanup.COMPACT_DELETE, retention_ms=30 * DAY_MS,
              retention_setting="status_retention_days"),
    # Progress lines for followers (the gateway's event stream, the SDK): worth minutes, not history.
    TopicSpec("framebus.progress", "tenant/request id", 6,
              "Denoising steps, encoding and uploading of running requests, for event streams (one hour).",
              ("framebus.generation.progress",), retention_ms=60 * 60 * 1000),
    TopicSpec("framebus.usage", "tenant id", 6, "Metered usage per terminal request.",
              ("framebus.usage.recorded",), retention_ms=400 * DAY_MS),
    # The ledger is the system of record for money: it is never compacted or expired,
    # and keyed by tenant so one partition owner folds each tenant's balance.
    TopicSpec("framebus.ledger", "tenant id", 6, "Credits, reservations, charges and releases.",
              ("framebus.ledger.credited", "framebus.ledger.reserved",
               "framebus.ledger.charged", "framebus.ledger.released"), retention_ms=-1),
    # The scheduler's own changelog: every live request (queued or dispatched) under
    # tenant/request id, a tombstone once it ends. A restarted scheduler rebuilds from it.
    TopicSpec("framebus.ledger.snapshots", "ledger partition", 1,
              "The ledger's fold per partition up to an offset (compacted): readers start there, not at offset 0.",
              ("framebus.ledger.snapshot",), cleanup=Cleanup.COMPACT,
              extra_config=(("max.message.bytes", str(SNAPSHOT_MAX_BYTES + 1024 * 1024)),)),
    TopicSpec("framebus.scheduler.backlog", "tenant/request id", 6,
              "Scheduler changelog: live requests and where they are (compacted).",
              ("framebus.scheduler.backlog",), cleanup=Cleanup.COMPACT),
    TopicSpec("framebus.scheduler.leader", "none (stays empty)", 1,
              "Held by the active scheduler (consumer group framebus-scheduler-leader); standbys wait for it.",
              retention_ms=DAY_MS),
    TopicSpec("framebus.tenants", "tenant id", 3, "Tenant settings and API key hashes (compacted).",
              ("framebus.tenant.updated",), cleanup=Cleanup.COMPACT),
    TopicSpec("framebus.batches", "batch id", 3, "Bulk batch job lifecycle.",
              ("framebus.batch.submitted", "framebus.batch.completed")),
    TopicSpec("framebus.batches.progress", "batch id", 3,
              "Each batch's lines by state, kept current by the batch tracker (compacted), while statuses are kept.",
              ("framebus.batch.progress",), cleanup=Cleanup.COMPACT_DELETE, retention_ms=30 * DAY_MS,
              retention_setting="status_retention_days"),
    TopicSpec("framebus.webhooks.secrets", "tenant id", 3,
              "Webhook signing secrets per tenant (compacted); readable by the notifier and the gateway only.",
              ("framebus.webhook.secrets",), cleanup=Cleanup.COMPACT),
    TopicSpec("framebus.signing.keys", "tenant id", 3,
              "Each tenant's keys for signing Kafka requests (compacted); readable by the scheduler only.",
              ("framebus.signing.keys",), cleanup=Cleanup.COMPACT),
    TopicSpec("framebus.webhooks.pending", "delivery id", 3,
              "Webhook deliveries not yet finished, with their next attempt time (compacted).",
              ("framebus.webhook.pending",), cleanup=Cleanup.COMPACT),
    TopicSpec("framebus.webhooks.attempts", "request id", 3, "Every webhook attempt and its outcome.",
              ("framebus.webhook.attempted",), retention_ms=30 * DAY_MS),
    TopicSpec("framebus.smoke", "check id", 1, "Smoke checks of `framebus smoke` and `framebus demo`.",
              ("framebus.smoke.checked",), retention_ms=DAY_MS),
    TopicSpec("framebus.webhooks.dead", "tenant id", 3,
              "Webhook deliveries that exhausted their retries, for replay.",
              ("framebus.webhook.dead",), retention_ms=30 * DAY_MS),
)

BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOGUE}


def catalogue(retention_days: Mapping[str, float] | None = None) -> tuple[TopicSpec, ...]:
    """The catalogue with each settable retention filled in: ``retention_days`` maps a spec's
    ``retention_setting`` to days (``Settings.catalogue()`` passes the configured ones); a
    setting left out keeps the catalogue's default. What ``framebus up`` creates and compares."""
    retention_days = retention_days or {}
    return tuple(replace(spec, retention_ms=round(retention_days[spec.retention_setting] * DAY_MS))
                 if spec.retention_setting in retention_days else spec for spec in CATALOGUE)


def request_topic(tier: str) -> str:
    if tier not in REQUEST_TIERS:
        raise ValueError(f"`tier` must be one of {', '.join(REQUEST_TIERS)} but is {tier!r}.")
    return f"framebus.requests.{tier}"


def render_markdown() -> str:
    """The catalogue as a Markdown table (embedded in the README; a test keeps it current)."""
    rows = ["| topic | key | partitions | cleanup / retention | event types | purpose |",
            "|---|---|---|---|---|---|"]
    for spec in CATALOGUE:
        if spec.cleanup is Cleanup.COMPACT:
            keep = "compacted"
        elif spec.cleanup is Cleanup.COMPACT_DELETE:
            keep = f"compacted, {spec.retention_ms // DAY_MS} d"
        elif spec.retention_ms < 0:
            keep = "delete, kept forever"
        else:
            keep = f"delete, {spec.retention_ms // DAY_MS} d"
        if spec.retention_setting:
            keep += f" (`FRAMEBUS_{spec.retention_setting.upper()}`)"
        types = ", ".join(f"`{t}`" for t in spec.event_types)
        rows.append(f"| `{spec.name}` | {spec.key} | {spec.partitions} | {keep} | {types} | {spec.purpose} |")
    return "\n".join(rows)
