"""Engines turn a job into encoded videos. The worker does not care how.

``NullEngine`` is the test engine: it follows the whole worker protocol but renders a
solid-colour clip (the colour from the seed) instead of running diffusion, after an
optional delay standing in for GPU time. It is for tests and load benchmarks only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas.events import GenerationRequest
from schemas.state import ModelName
from schemas.workers import JobDispatched
from services.generator.encode import EncodeConfig, EncodedVideo, encode_video

Cancelled = Callable[[str], bool]  # request id -> cancelled?


@dataclass(frozen=True)
class Rendered:
    request: GenerationRequest
    video: EncodedVideo | None  # None: cancelled before it was rendered
    gpu_seconds: float
    steps_run: int
    shared: bool = False  # identical output other requests may share (the null engine's clips)


class Engine(Protocol):
    name: str
    model: ModelName

    def warm(self) -> None: ...

    def render(self, job: JobDispatched, cancelled: Cancelled) -> list[Rendered]: ...


PALETTE = np.array([[220, 60, 40], [40, 160, 90], [50, 90, 210], [230, 190, 40],
                    [150, 70, 190], [30, 170, 190], [240, 130, 30], [120, 120, 120]], dtype=np.uint8)


class NullEngine:
    """Solid colours, no diffusion. Encodes each (shape, colour) once; the clip is stored once too."""

    name = "null"

    def __init__(self, *, model: ModelName = ModelName.WAN_TINY, delay_ms: float = 0.0,
                 encode: EncodeConfig = EncodeConfig(preset="ultrafast")) -> None:
        self.model = model
        self.delay_s = delay_ms / 1000.0
        self.encode_config = encode
        self._clips: dict[tuple, EncodedVideo] = {}

    def warm(self) -> None:
        self._clip(16, 16, 1, 16, 0)

    def _clip(self, width: int, height: int, frames: int, fps: int, colour: int) -> EncodedVideo:
        key = (width, height, frames, fps, colour)
        if key not in self._clips:
            pixels = np.broadcast_to(PALETTE[colour], (frames, height, width, 3)).copy()
            self._clips[key] = encode_video(pixels, fps, self.encode_config)
        return self._clips[key]

    def render(self, job: JobDispatched, cancelled: Cancelled) -> list[Rendered]:
        started = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        share = (time.perf_counter() - started) / len(job.requests)
        out = []
        for request in job.requests:
            if cancelled(request.request_id):
                out.append(Rendered(request, None, share, 0))
                continue
            clip = self._clip(request.width, request.height, request.num_frames, request.fps,
                              (request.seed or 0) % len(PALETTE))
            out.append(Rendered(request, clip, share, request.num_inference_steps, shared=True))
        return out
