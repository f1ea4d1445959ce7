"""Engines turn a batch of requests into frames (or finished clips). The worker does not care how.

``NullEngine`` is the test engine: it follows the whole worker protocol but renders a
solid-colour clip (the colour from the seed) instead of running diffusion, after an
optional delay standing in for GPU time. It is for tests and load benchmarks only.
The diffusion engine lives in ``services.generator.diffusion``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from framebus.schemas.events import GenerationRequest
from framebus.schemas.state import ModelName
from framebus.services.generator.encode import EncodeConfig, EncodedVideo, encode_video
from framebus.services.generator.rendered import IsCancelled, Rendered, StepReport

__all__ = ["Engine", "IsCancelled", "NullEngine", "Rendered", "StepReport"]


class Engine(Protocol):
    name: str
    model: ModelName
    # What decides the pixels besides the request (model weights, switches); "" disables the result cache.
    engine_id: str

    def warm(self) -> None: ...

    def render(self, requests: Sequence[GenerationRequest], cancelled: IsCancelled,
               on_step: StepReport | None = None) -> list[Rendered]:
        """One item per request, in order; ``cancelled`` is asked between steps (a cancelled request
        comes back with no frames) and ``on_step`` told each step done. Raises ``EngineOutOfMemory``
        when the batch does not fit."""


PALETTE = np.array([[220, 60, 40], [40, 160, 90], [50, 90, 210], [230, 190, 40],
                    [150, 70, 190], [30, 170, 190], [240, 130, 30], [120, 120, 120]], dtype=np.uint8)


class NullEngine:
    """Solid colours, no diffusion. Encodes each (shape, colour) once; the clip is stored once too."""

    name = "null"
    engine_id = ""  # clips are shared by content already

    def __init__(self, clip_dir: Path, *, model: ModelName = ModelName.WAN_TINY, delay_ms: float = 0.0,
                 encode: EncodeConfig = EncodeConfig(x264_preset="ultrafast")) -> None:
        self.model = model
        self.delay_s = delay_ms / 1000.0
        self.encode_config = encode
        self.clip_dir = clip_dir
        self._clips: dict[tuple, EncodedVideo] = {}

    def warm(self) -> None:  # idempotent, like every engine's
        self._clip(16, 16, 1, 16, 0)

    def _clip(self, width: int, height: int, frames: int, fps: int, colour: int) -> EncodedVideo:
        key = (width, height, frames, fps, colour)
        if key not in self._clips:
            pixels = np.broadcast_to(PALETTE[colour], (frames, height, width, 3)).copy()
            out = self.clip_dir / f"{width}x{height}x{frames}@{fps}-{colour}.mp4"
            self._clips[key] = encode_video(pixels, fps, out, self.encode_config)
        return self._clips[key]

    def render(self, requests: Sequence[GenerationRequest], cancelled: IsCancelled,
               on_step: StepReport | None = None) -> list[Rendered]:
        started = time.perf_counter()
        steps = requests[0].num_inference_steps
        while time.perf_counter() - started < self.delay_s:  # "denoising": looks at `cancelled` between steps
            cancelled(requests[0])
            if on_step is not None:
                on_step(min(steps - 1, int(steps * (time.perf_counter() - started) / self.delay_s)), steps)
            time.sleep(min(0.05, self.delay_s))
        if on_step is not None:
            on_step(steps, steps)
        share = (time.perf_counter() - started) / len(requests)
        out = []
        for request in requests:
            if cancelled(request):
                out.append(Rendered(request, gpu_seconds=share))
                continue
            clip = self._clip(request.width, request.height, request.num_frames, request.fps,
                              request.effective_seed() % len(PALETTE))
            out.append(Rendered(request, video=clip, gpu_seconds=share, steps_run=request.num_inference_steps,
                                denoise_s=share, shared=True))
        return out
