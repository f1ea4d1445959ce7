"""Every event type of the contract and the model that reads it."""

from __future__ import annotations

from framebus.schemas.events import (
    BatchCompleted,
    BatchProgress,
    BatchSubmitted,
    CancelRequested,
    Event,
    GenerationCancelled,
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    LedgerCharged,
    LedgerCredited,
    LedgerReleased,
    LedgerReserved,
    LedgerSnapshot,
    StatusChanged,
    TenantUpdated,
    UsageRecorded,
)
from framebus.schemas.webhooks import SigningKeys, WebhookAttempted, WebhookDead, WebhookDelivery, WebhookSecrets
from framebus.schemas.workers import JobDispatched, WorkerAnnounced, WorkReturned

EVENT_MODELS: dict[str, type[Event]] = {
    model.event_type: model
    for model in (GenerationRequest, CancelRequested, GenerationCompleted, GenerationFailed, GenerationCancelled,
                  GenerationProgress, StatusChanged, UsageRecorded, LedgerCredited, LedgerReserved, LedgerCharged, LedgerReleased, LedgerSnapshot,
                  BatchCompleted, BatchProgress, BatchSubmitted, TenantUpdated, WorkerAnnounced, JobDispatched, WebhookDelivery,
                  WebhookAttempted, WebhookDead, WebhookSecrets, SigningKeys, WorkReturned)
}
