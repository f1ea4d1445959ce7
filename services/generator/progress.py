"""Progress lines for followers: denoising steps, then encoding and uploading.

Nothing decides on these records (the status topic does that), so they are sent once,
never resent, and thinned: a job reports its first and last denoising step and at most
one step a second between, whatever its step count or batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from framebus.schemas.events import GenerationProgress, GenerationRequest, ProgressStage
from framebus.services.generator.outcomes import Publish

PROGRESS_TOPIC = "framebus.progress"
STEP_REPORT_EVERY_S = 1.0


def progress(request: GenerationRequest, stage: ProgressStage, *, step: int | None = None,
             steps: int | None = None) -> Publish:
    return Publish(PROGRESS_TOPIC, GenerationProgress(request_id=request.request_id, tenant_id=request.tenant_id,
                                                      stage=stage, step=step, steps=steps))


class StepReporter:
    """The engine's ``on_step`` for one batch: reports each of its requests' steps, thinned."""

    def __init__(self, requests: Sequence[GenerationRequest], send: Callable[[Iterable[Publish]], None],
                 monotonic: Callable[[], float], *, every_s: float = STEP_REPORT_EVERY_S) -> None:
        self.requests = requests
        self.send = send
        self.monotonic = monotonic
        self.every_s = every_s
        self._last_at: float | None = None
        self._last_step = -1

    def __call__(self, step: int, steps: int) -> None:
        now = self.monotonic()
        due = self._last_at is None or step >= steps or now - self._last_at >= self.every_s
        if not due or step <= self._last_step:
            return
        self._last_at, self._last_step = now, step
        self.send(progress(request, "denoising", step=step, steps=steps) for request in self.requests)
