"""A request's progress as a stream: status changes and progress lines, then its terminal state.

The gateway's tables call ``Watchers.notify`` as records arrive (on the event loop, or from
the producer's thread for its own `accepted` records); each open event stream holds one
queue. ``follow`` turns a request's current row plus what arrives into the stream the
``/events`` route sends: it starts with where the request is now, so a stream opened late
misses nothing that still matters, and it ends with the terminal state. The ordering rule
is the SDK's (``framebus.results.StreamOrder``), so both ends agree on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from framebus.results import StreamItem, StreamOrder, shown
from framebus.schemas.codec import decode_event
from framebus.schemas.events import GenerationProgress, StatusChanged

Key = tuple[str, str]  # (tenant id, request id)
Update = StatusChanged | GenerationProgress


class Watchers:
    """Open event streams by request; safe to notify from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Key, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}

    def open(self, key: Key) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._queues.setdefault(key, set()).add((asyncio.get_running_loop(), queue))
        return queue

    def close(self, key: Key, queue: asyncio.Queue) -> None:
        with self._lock:
            held = self._queues.get(key, set())
            held.discard(next(((loop, q) for loop, q in held if q is queue), (None, None)))  # type: ignore[arg-type]
            if not held:
                self._queues.pop(key, None)

    def notify(self, update: Update) -> None:
        with self._lock:
            held = list(self._queues.get((update.tenant_id, update.request_id), ()))
        for loop, queue in held:
            loop.call_soon_threadsafe(queue.put_nowait, update)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(held) for held in self._queues.values())


class ProgressTable:
    """The latest progress line of each running request (bounded: oldest dropped first)."""

    def __init__(self, on_change: Callable[[GenerationProgress], None] | None = None, *,
                 max_rows: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._rows: OrderedDict[Key, GenerationProgress] = OrderedDict()
        self.on_change = on_change
        self.max_rows = max_rows

    def apply_record(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, GenerationProgress):
            self.apply(event)

    def apply(self, progress: GenerationProgress) -> None:
        key = (progress.tenant_id, progress.request_id)
        with self._lock:
            self._rows[key] = progress
            self._rows.move_to_end(key)
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
        if self.on_change is not None:
            self.on_change(progress)

    def get(self, tenant_id: str, request_id: str) -> GenerationProgress | None:
        with self._lock:
            return self._rows.get((tenant_id, request_id))


async def follow(current: StatusChanged, latest_progress: GenerationProgress | None, queue: asyncio.Queue,
                 video_link: Callable[[str], str], *, keepalive_s: float = 15.0) -> AsyncIterator[StreamItem]:
    """The stream of one request from ``current`` on (``StreamOrder`` keeps it in order); ends
    after its terminal state. A keepalive item every ``keepalive_s`` of quiet."""
    order = StreamOrder()
    for update in (current, latest_progress):
        if update is not None and (item := order.admit(shown(update, video_link))) is not None:
            yield item
    while not order.finished:
        try:
            update = await asyncio.wait_for(queue.get(), timeout=keepalive_s)
        except TimeoutError:
            yield StreamItem("keepalive")
            continue
        if (item := order.admit(shown(update, video_link))) is not None:
            yield item
