"""The lifecycle of one generation request, shared by every service."""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    ACCEPTED = "accepted"  # a producer's record is on a request topic
    QUEUED = "queued"  # admitted by the scheduler, tokens reserved
    DISPATCHED = "dispatched"  # in a batch on framebus.jobs for one worker
    RUNNING = "running"  # the worker started denoising
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def progress(self) -> int:
        """How far along the lifecycle: readers keep the furthest state they saw, so a late
        record (an `accepted` written after `queued`) never moves a request backwards."""
        return _PROGRESS[self]


_TERMINAL = frozenset({RequestState.COMPLETED, RequestState.FAILED, RequestState.CANCELLED})
_PROGRESS = {RequestState.ACCEPTED: 0, RequestState.QUEUED: 1, RequestState.DISPATCHED: 2, RequestState.RUNNING: 3,
             **{state: 10 for state in _TERMINAL}}


class Tier(StrEnum):
    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"


class ModelName(StrEnum):
    """Models a request may name. The generator's registry maps each to weights."""

    WAN_SHAPES = "wan-shapes"  # trained here on coloured shapes, shipped in the repo: the demo's model
    WAN_TINY = "wan-tiny"  # built from config with seeded random weights: tests of the plumbing
    WAN21_T2V_1_3B = "wan2.1-t2v-1.3b"
    WAN21_T2V_14B = "wan2.1-t2v-14b"
    WAN22_TI2V_5B = "wan2.2-ti2v-5b"


class ErrorCode(StrEnum):
    """Machine-readable reasons on `failed` events, rejections and HTTP errors."""

    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    MISSING_HEADER = "missing_header"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TENANT = "unknown_tenant"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_UNAVAILABLE = "model_unavailable"  # no worker served the request's model within the grace
    DUPLICATE_REQUEST = "duplicate_request"
    UNAUTHENTICATED = "unauthenticated"  # a Kafka record not signed by its tenant or the services (1.7)
    ALREADY_FINISHED = "already_finished"  # a cancel of a request that has ended
    INSUFFICIENT_BALANCE = "insufficient_balance"
    QUEUE_FULL = "queue_full"
    EXPIRED = "expired"
    WORKER_LOST = "worker_lost"
    GENERATION_ERROR = "generation_error"
    OUT_OF_MEMORY = "out_of_memory"
    ENCODE_FAILED = "encode_failed"
    UPLOAD_FAILED = "upload_failed"
    INTERNAL_ERROR = "internal_error"
