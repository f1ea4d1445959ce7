"""The worker protocol: workers announce capacity, the scheduler dispatches jobs on credit.

A worker publishes ``WorkerAnnounced`` on framebus.workers when it starts (after its
model is warm), whenever its capacity changes, and as a heartbeat. The scheduler sends
a job to a worker only while ``slots`` exceeds the jobs it holds for that worker:
jobs the worker reports running, plus jobs sent after the last one it reports having
received (``last_job_seq``), so a job in flight on Kafka is never counted as free room.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from framebus.schemas.events import Event, GenerationRequest, RequestId, TenantId, utc_now
from framebus.schemas.state import ModelName

WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Shape(BaseModel):
    """What must match for requests to share one pipeline call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName
    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float

    @classmethod
    def of(cls, request: GenerationRequest) -> Shape:
        return cls(model=request.model, width=request.width, height=request.height, num_frames=request.num_frames,
                   num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale)

    def label(self) -> str:
        """For people: "wan-tiny 64x64x5, 4 steps, cfg 5"."""
        return (f"{self.model.value} {self.width}x{self.height}x{self.num_frames}, {self.num_inference_steps} steps, "
                f"cfg {self.guidance_scale:g}")


class WorkerAnnounced(Event):
    event_type: ClassVar[str] = "framebus.worker.announced"

    worker_id: str = Field(pattern=WORKER_ID_PATTERN)
    model: ModelName
    warm: bool = Field(description="The model is loaded and has run once; only warm workers get jobs.")
    shapes: tuple[Shape, ...] = Field((), description="Shapes it accepts; empty: any shape of its model.")
    max_batch_size: int = Field(ge=1, le=256)
    slots: int = Field(ge=0, le=64, description="Jobs it can hold at once (2 lets encode overlap denoise).")
    running_job_ids: tuple[str, ...] = ()
    last_job_seq: int = Field(-1, ge=-1, description="Highest per-worker job sequence number it has received.")
    heartbeat_interval_s: float = Field(2.0, gt=0)
    engine: str = Field("diffusers", description="`null` marks the test engine that renders solid colours.")
    announced_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = Field(
        None, description="When this worker process started. A new value under the same worker id is a restart: "
                          "the jobs the earlier process held are re-queued at once (since schema 1.3).")
    stopping: bool = False

    def partition_key(self) -> str:
        return self.worker_id

    def subject(self) -> str:
        return self.worker_id

    def accepts(self, shape: Shape) -> bool:
        return shape.model == self.model and (not self.shapes or shape in self.shapes)


class JobDispatched(Event):
    """One batch for one worker: the requests of one shape, each with its seed fixed."""

    event_type: ClassVar[str] = "framebus.job.dispatched"

    job_id: str = Field(min_length=1, max_length=128)
    worker_id: str = Field(pattern=WORKER_ID_PATTERN)
    seq: int = Field(ge=0, description="Per-worker sequence number, for credit accounting.")
    shape: Shape
    requests: tuple[GenerationRequest, ...] = Field(min_length=1)
    attempt: int = Field(1, ge=1, description="Above 1: re-dispatched after a worker was lost.")
    dispatched_at: datetime = Field(default_factory=utc_now)
    traceparents: dict[str, str] = Field(
        default_factory=dict, description="Request id -> W3C traceparent of its dispatch (1.4): each request's "
                                          "own trace continues on the worker, though the job is one record.")

    def partition_key(self) -> str:
        return self.worker_id

    def subject(self) -> str:
        return self.worker_id


class WorkReturned(Event):
    """framebus.control.returned: a worker that stops hands a request of a job back unfinished (it
    was interrupted between denoising steps, or never started); the scheduler queues it again at
    once, in its place, instead of waiting for the worker's heartbeats to lapse."""

    event_type: ClassVar[str] = "framebus.control.returned"

    tenant_id: TenantId
    request_id: RequestId
    job_id: str = Field(max_length=128)
    worker_id: str = Field(pattern=WORKER_ID_PATTERN)
    reason: str = Field("the worker is stopping", max_length=512)
