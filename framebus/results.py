"""What a client learns about a generation: its status, its progress lines, and the order they are shown in.

One shape for both transports: the gateway answers ``GET /v1/generations/{id}`` with a
``GenerationStatus`` and the SDK builds the same from a Kafka status record, so code
written against one transport runs on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from framebus.schemas.events import ErrorInfo, GenerationProgress, Output, StatusChanged, Timings
from framebus.schemas.state import RequestState, Tier


class GenerationStatus(BaseModel):
    """A generation as far as it has got; ``terminal`` once completed, failed or cancelled."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    state: RequestState
    terminal: bool
    tier: Tier
    tokens: float | None = None
    updated_at: datetime
    timings: Timings
    batch_id: str | None = None
    output: Output | None = Field(None, description="The stored video; `output.url` is presigned and expires at "
                                                    "`output.url_expires_at`.")
    video_url: str | None = Field(None, description="The stable link to the video (completed only): it never "
                                                    "expires, answering each GET with a freshly presigned URL.")
    error: ErrorInfo | None = None
    waiting_reason: str | None = Field(None, description="Why a queued request cannot run yet.")

    @classmethod
    def from_status(cls, status: StatusChanged, video_link: Callable[[str], str] | None = None) -> GenerationStatus:
        """``video_link``: the stable link of a request's video (a gateway's); None over Kafka alone."""
        return cls(request_id=status.request_id, state=status.state, terminal=status.state.is_terminal,
                   tier=status.tier, tokens=status.tokens, updated_at=status.updated_at, timings=status.timings,
                   batch_id=status.batch_id, output=status.output, error=status.error,
                   waiting_reason=status.waiting_reason,
                   video_url=video_link(status.request_id) if video_link and status.output is not None else None)

    @property
    def url(self) -> str | None:
        """Where to fetch the video now: the stable link where there is one, else the presigned URL."""
        return self.video_url or (self.output.url if self.output is not None else None)


class Progress(BaseModel):
    """A progress line of a running request (the `progress` event of a generation's event stream)."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    stage: Literal["denoising", "encoding", "uploading"]
    step: int | None = Field(None, description="Denoising steps done.")
    steps: int | None = Field(None, description="Denoising steps in all.")
    at: datetime

    @classmethod
    def from_event(cls, event: GenerationProgress) -> Progress:
        return cls(request_id=event.request_id, stage=event.stage, step=event.step, steps=event.steps, at=event.at)


@dataclass(frozen=True)
class StreamItem:
    """One event of a generation's stream. ``kind``: status, progress, keepalive, or the terminal
    state's name (completed, failed, cancelled), which is always the last."""

    kind: str
    data: GenerationStatus | Progress | None = None

    @property
    def terminal(self) -> bool:
        return isinstance(self.data, GenerationStatus) and self.data.terminal


class StreamOrder:
    """Which updates a stream shows, so it never goes backwards: a status only when the state
    moves forward, progress lines until the end, nothing after the terminal state.
    Updates may arrive late or twice (two topics, retries, a reconnect); the stream stays in order."""

    def __init__(self) -> None:
        self.state: RequestState | None = None
        self._progress: Progress | None = None

    def admit(self, item: GenerationStatus | Progress) -> StreamItem | None:
        if isinstance(item, Progress):
            if self.finished or item == self._progress:
                return None
            self._progress = item
            return StreamItem("progress", item)
        if self.state is not None and (self.state.is_terminal or item.state.progress <= self.state.progress):
            return None
        self.state = item.state
        return StreamItem(item.state.value if item.terminal else "status", item)

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.is_terminal


def shown(update: StatusChanged | GenerationProgress,
          video_link: Callable[[str], str] | None = None) -> GenerationStatus | Progress:
    """A Kafka record as clients see it: the same shapes as the HTTP API's."""
    if isinstance(update, GenerationProgress):
        return Progress.from_event(update)
    return GenerationStatus.from_status(update, video_link)
