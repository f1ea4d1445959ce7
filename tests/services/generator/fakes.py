"""Fakes for the worker's pure decision tests: a clock, an engine, a store and a video.
No Kafka, S3 or ffmpeg; nothing here touches the network or the disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from framebus.schemas.events import GenerationRequest, Output
from framebus.services.generator.errors import EngineOutOfMemory, UploadFailed
from framebus.services.generator.rendered import Rendered

EPOCH = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def request(request_id: str, *, seed: int = 7, prompt: str = "a red fox in the snow", **fields) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, prompt=prompt, model="wan-tiny", width=64, height=48,
                             num_frames=5, seed=seed, submitted_at=EPOCH - timedelta(seconds=2),
                             **{"num_inference_steps": 3, "tenant_id": "acme", **fields})


def output(request: GenerationRequest, bucket: str = "videos") -> Output:
    return Output(bucket=bucket, key=f"{request.tenant_id}/{request.request_id}.mp4", url="http://s3.test/x",
                  url_expires_at=EPOCH + timedelta(hours=1), bytes=1234, sha256="ab" * 32, duration_s=0.3125,
                  codec="h264", width=request.width, height=request.height, num_frames=request.num_frames,
                  fps=request.fps)


class FakeClock:
    """Starts at EPOCH; every reading moves it on by ``step_s``, so durations are never zero."""

    def __init__(self, step_s: float = 0.5) -> None:
        self.step = timedelta(seconds=step_s)
        self.at = EPOCH
        self.ticks = 0.0

    def now(self) -> datetime:
        self.at += self.step
        return self.at

    def monotonic(self) -> float:
        self.ticks += self.step.total_seconds()
        return self.ticks


class FakeEngine:
    """Renders one frame per request; out of memory on any batch larger than ``fits``;
    ``fails`` raises that error for every batch. Records the batch sizes it saw."""

    def __init__(self, *, fits: int = 64, fails: Exception | None = None) -> None:
        self.fits, self.fails = fits, fails
        self.batches: list[list[str]] = []

    def render(self, requests, cancelled, on_step=None) -> list[Rendered]:
        self.batches.append([r.request_id for r in requests])
        if self.fails is not None:
            raise self.fails
        if len(requests) > self.fits:
            raise EngineOutOfMemory(f"{len(requests)} do not fit")
        frames = np.zeros((1, 16, 16, 3), dtype=np.uint8)
        return [Rendered(r) if cancelled(r) else Rendered(r, frames=frames, gpu_seconds=1.0, steps_run=3,
                                                           denoise_s=0.8, decode_s=0.2)
                for r in requests]


@dataclass
class FakeVideo:
    encode_s: float = 0.25
    removed: bool = False

    def remove(self) -> None:
        self.removed = True


@dataclass
class FakeStore:
    """The result cache is a dict by fingerprint; ``upload_error`` makes every put fail."""

    index: dict[str, Output] = field(default_factory=dict)
    upload_error: str | None = None
    puts: list[str] = field(default_factory=list)

    def cached(self, request, fingerprint, now) -> Output | None:
        found = self.index.get(fingerprint)
        return None if found is None else output(request, found.bucket)

    def put(self, request, video, now, *, fingerprint=None, shared=False) -> Output:
        if self.upload_error is not None:
            raise UploadFailed(self.upload_error)
        self.puts.append(request.request_id)
        stored = output(request)
        if fingerprint is not None:
            self.index[fingerprint] = stored
        return stored
