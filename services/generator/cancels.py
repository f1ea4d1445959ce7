"""Which requests in the worker's hands have been cancelled.

A cancel names a request by (tenant, request id), since request ids are chosen by clients
and two tenants may pick the same one. A cancel is only useful while its request is in
hand: the worker forgets a job's cancels once the job is reported, so the book stays as
small as the work in flight. Safe to share between the reader, render and output threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from framebus.schemas.events import GenerationRequest


class CancelBook:
    def __init__(self) -> None:
        self._cancelled: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def cancel(self, tenant_id: str, request_id: str) -> None:
        with self._lock:
            self._cancelled.add((tenant_id, request_id))

    def is_cancelled(self, request: GenerationRequest) -> bool:
        with self._lock:
            return (request.tenant_id, request.request_id) in self._cancelled

    def all_cancelled(self, requests: Iterable[GenerationRequest]) -> bool:
        """Whether a render shared by ``requests`` may stop: only when every one of them is cancelled."""
        return all(self.is_cancelled(request) for request in requests)

    def forget(self, requests: Iterable[GenerationRequest]) -> None:
        """Drop the cancels of requests that have been reported."""
        with self._lock:
            for request in requests:
                self._cancelled.discard((request.tenant_id, request.request_id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._cancelled)
