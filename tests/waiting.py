"""Bounded waiting for tests that watch something happen on another process."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout_s: float = 60.0, interval_s: float = 0.2) -> bool:
    """True as soon as ``check()`` is; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False
