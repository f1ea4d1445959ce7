"""What the render stage hands the output stage: one item per request of a job.

``Rendered`` comes from an engine; ``Served`` from the result cache (no engine work);
``Refused`` when the engine could not render the request. These types import no engine,
ffmpeg, S3 or Kafka code, so decision code and its tests can build them by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from framebus.schemas.events import GenerationRequest, Output
from framebus.schemas.state import ErrorCode

if TYPE_CHECKING:
    import numpy as np

    from framebus.services.generator.encode import EncodedVideo

IsCancelled = Callable[[GenerationRequest], bool]
# Told after each denoising step: (steps done, steps in all). Progress for followers only.
StepReport = Callable[[int, int], None]


@dataclass(frozen=True)
class Rendered:
    """One request's outcome from the engine. ``frames`` and ``video`` are both None when it was cancelled."""

    request: GenerationRequest
    frames: np.ndarray | None = None  # (frames, height, width, 3) uint8 RGB, to be encoded
    video: EncodedVideo | None = None  # already encoded (the null engine's shared clips)
    gpu_seconds: float = 0.0  # this request's share of the batch's engine time
    steps_run: int = 0
    steps_skipped_by_cache: int = 0
    text_encode_s: float | None = None  # None: the engine encodes no prompt (the null engine)
    denoise_s: float = 0.0
    decode_s: float = 0.0
    shared: bool = False  # identical output other requests may share (stored once)

    @property
    def cancelled(self) -> bool:
        return self.frames is None and self.video is None


@dataclass(frozen=True)
class Served:
    """Served from the result cache: a copy of an identical earlier video, no engine work."""

    request: GenerationRequest
    output: Output


@dataclass(frozen=True)
class Refused:
    """The engine could not render this request; ``code`` and ``message`` go to the client as the error."""

    request: GenerationRequest
    code: ErrorCode
    message: str


Item = Rendered | Served | Refused
