"""One reader of framebus.status (and framebus.progress) per Kafka client, shared by every call.

A status lives under the key ``tenant/request id``, so one partition holds it. The follower
reads a status partition (the retention window of it) the first time a call needs it, then keeps
following it: every later ``status`` of a request there is a dictionary lookup, and
``wait``/``events`` are told of each change as it arrives. A one-off CLI call reads one
partition (as it always did); a long-lived client reads each partition once.
Progress partitions are followed from their end: progress is worth seconds, not history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import TopicPartition
from kafka.errors import KafkaError

from framebus import kafka as kafka_adapter
from framebus.errors import KafkaAdapterError
from framebus.schemas.codec import decode_event
from framebus.schemas.errors import CodecError
from framebus.schemas.events import GenerationProgress, StatusChanged, furthest, status_key

log = logging.getLogger(__name__)
Listener = Callable[[StatusChanged | GenerationProgress], None]


class StatusFollower:
    def __init__(self, bootstrap: str, status_topic: str, progress_topic: str, tenant_id: str, *,
                 since_s: float | None = None) -> None:
        self.bootstrap = bootstrap
        self.since_s = since_s  # statuses older than this are past retention: not read at all
        self.status_topic = status_topic
        self.progress_topic = progress_topic
        self.tenant_id = tenant_id
        self.records_read = 0  # every record fetched, so tests can see what a call costs
        self._lock = threading.Lock()
        self._rows: dict[str, StatusChanged] = {}
        self._listeners: dict[str, set[Listener]] = {}
        self._caught_up: dict[int, threading.Event] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._wanted: set[int] = set()
        self._partitions: int | None = None
        self._with_progress = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None

    # --- calls -------------------------------------------------------------------------
    def status(self, request_id: str, *, timeout_s: float) -> StatusChanged | None:
        self._ready(request_id, timeout_s)
        with self._lock:
            return self._rows.get(request_id)

    def listen(self, request_id: str, listener: Listener, *, timeout_s: float) -> Callable[[], None]:
        """Call ``listener`` with each status and progress record of the request from now on;
        returns the function that stops it. The current row is ``status``'s to read."""
        with self._lock:
            self._listeners.setdefault(request_id, set()).add(listener)
        self._ready(request_id, timeout_s)

        def stop() -> None:
            with self._lock:
                held = self._listeners.get(request_id, set())
                held.discard(listener)
                if not held:
                    self._listeners.pop(request_id, None)
        return stop

    def apply(self, status: StatusChanged) -> None:
        """A status this client published itself (read your own writes before the topic echoes it)."""
        if status.tenant_id == self.tenant_id:
            self._apply_status(status)

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the reading thread --------------------------------------------------------------
    def _ready(self, request_id: str, timeout_s: float) -> None:
        """Return once the partition holding the request's status has been read to its end."""
        partition = self._partition_of(request_id, timeout_s)
        with self._lock:
            event = self._caught_up.get(partition)
            if event is None:
                event = self._caught_up[partition] = threading.Event()
                self._wanted.add(partition)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="framebus-status-follower", daemon=True)
                self._thread.start()
        if not event.wait(timeout_s):
            detail = f": {self._failure}" if self._failure else ""
            raise KafkaAdapterError(f"could not read {self.status_topic} within {timeout_s:g}s{detail}")

    def _partition_of(self, request_id: str, timeout_s: float) -> int:
        if self._partitions is None:
            found = kafka_adapter.partitions_of(self.bootstrap, self.status_topic)
            if not found:
                raise KafkaAdapterError(f"topic {self.status_topic} does not exist; run `framebus up` to create it")
            # A deployment from before 1.6 has no progress topic: statuses alone then.
            self._with_progress = bool(kafka_adapter.partitions_of(self.bootstrap, self.progress_topic))
            self._partitions = len(found)
        return kafka_adapter.partition_for(status_key(self.tenant_id, request_id).encode(), self._partitions)

    def _run(self) -> None:
        try:
            # Large polls and short broker waits: catching up a partition is one burst of fetches.
            consumer = kafka_adapter.consumer(self.bootstrap, group_id=None, max_poll_records=5000, fetch_max_wait_ms=50)
        except KafkaAdapterError as exc:
            self._failure = exc
            return
        try:
            while not self._stopped.is_set():
                try:
                    self._read_once(consumer)
                except Exception as exc:  # noqa: BLE001 - a broker away or a leader moving: every waiter hangs on this thread
                    if not isinstance(exc, KafkaError):
                        log.warning("reading %s failed; trying again: %r", self.status_topic, exc)
                    self._failure = exc
                    self._stopped.wait(0.5)
        finally:
            consumer.close()

    def _read_once(self, consumer) -> None:
        self._assign_wanted(consumer)
        batches = consumer.poll(timeout_ms=100)
        for records in batches.values():
            self.records_read += len(records)
            for record in records:
                self._apply_record(record)
        self._mark_caught_up(consumer)
        self._failure = None

    def _assign_wanted(self, consumer) -> None:
        with self._lock:
            wanted = set(self._wanted)
        if not wanted:
            return
        new_status = [TopicPartition(self.status_topic, p) for p in sorted(wanted)]
        new_progress = [TopicPartition(self.progress_topic, p) for p in sorted(wanted) if self._with_progress]
        consumer.assign(sorted(set(consumer.assignment()) | set(new_status) | set(new_progress)))
        consumer.seek_to_beginning(*new_status)
        if self.since_s is not None:
            stamp = max(0, int((time.time() - self.since_s) * 1000))
            for tp, found in consumer.offsets_for_times(dict.fromkeys(new_status, stamp)).items():
                if found is not None:
                    consumer.seek(tp, found.offset)
                else:  # nothing in the window yet: from the end
                    consumer.seek_to_end(tp)
        if new_progress:
            consumer.seek_to_end(*new_progress)
        # Only once the end offsets are known is the partition taken: a failure here (its leader
        # away) leaves it wanted, and the next pass starts it again from the beginning.
        self._ends.update(consumer.end_offsets(new_status, timeout_ms=10_000))
        with self._lock:
            self._wanted -= wanted

    def _mark_caught_up(self, consumer) -> None:
        for tp, end in list(self._ends.items()):
            position = consumer.position(tp, timeout_ms=1_000)  # None while its offset is being reset
            if position is not None and position >= end:
                del self._ends[tp]
                self._caught_up[tp.partition].set()

    def _apply_record(self, record) -> None:
        try:
            event = decode_event(record.headers, record.value).event
        except CodecError as exc:
            log.debug("skipped an unreadable record of %s: %s", record.topic, exc)
            return
        if getattr(event, "tenant_id", None) != self.tenant_id:
            return  # another tenant's: this client keeps only its own
        if isinstance(event, StatusChanged):
            self._apply_status(event)
        elif isinstance(event, GenerationProgress):
            self._tell(event.request_id, event)

    def _apply_status(self, status: StatusChanged) -> None:
        with self._lock:
            before = self._rows.get(status.request_id)
            after = self._rows[status.request_id] = furthest(before, status)
        if before is None or before.state is not after.state:
            self._tell(status.request_id, after)

    def _tell(self, request_id: str, update: StatusChanged | GenerationProgress) -> None:
        with self._lock:
            listeners = list(self._listeners.get(request_id, ()))
        for listener in listeners:
            listener(update)
