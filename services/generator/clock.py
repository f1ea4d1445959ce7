"""The worker's sense of time, passed in: wall-clock points for events, a monotonic clock
for durations and deadlines. ``app.py`` builds the ``SystemClock``; tests pass a fake."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC: what events carry."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: only differences mean anything."""


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
