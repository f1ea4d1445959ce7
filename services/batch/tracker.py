"""`framebus batch-tracker`: finishes bulk jobs. Kafka and S3 live here; decisions in core.py.

It follows framebus.batches (which batches are open, which already completed) and
framebus.status, keeping the statuses of open batches' lines only. Every check it rewrites
each open batch's counts on the compacted framebus.batches.progress when they changed (what
`framebus batch status` and `GET /v1/batches/{id}` read). An open batch is finished when
each of its lines is terminal, or when its completion window ends: then its unfinished
lines are cancelled (they still end in exactly one terminal state, through the
scheduler or their worker) and, once they have ended or a grace period passed, the
manifest and error file go to S3 and ``framebus.batch.completed`` is published (the
notifier turns it into a ``batch.completed`` webhook). Finishing is idempotent: same
keys in S3, and a batch with a completed record is never finished again.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta

from framebus.schemas import sources
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.events import (
    BatchCompleted,
    BatchCounts,
    BatchProgress,
    BatchSubmitted,
    CancelRequested,
    StatusChanged,
    furthest,
)
from framebus.schemas.state import RequestState
from framebus.services.batch.core import build_manifest, count_lines
from framebus.services.batch.submit import input_keys
from framebus.services.common import metrics, storage
from framebus.services.common.compacted import TopicTable
from framebus.services.common.hosting import serve
from framebus.services.common.kafka import stream_producer
from framebus.services.common.processor import Outputs, Processor, Tick
from framebus.services.common.settings import Settings
from framebus.signing import signed_for

log = logging.getLogger(__name__)
SOURCE = sources.BATCH_TRACKER
OUTPUTS = ("framebus.control", "framebus.batches", "framebus.batches.progress")
CANCEL_GRACE_S = 60.0  # after cancelling an expired batch's lines, how long to wait for them to end
PROGRESS_INTERVAL_S = 2.0  # a batch's progress record is rewritten at most this often
LOG_INTERVAL_S = 60.0  # and its progress logged at most this often


class BatchTracker:
    def __init__(self, settings: Settings, *, check_interval_s: float = 1.0, clock=time.time) -> None:
        self.settings = settings
        self.check_interval_s = check_interval_s
        self.open: dict[str, BatchSubmitted] = {}
        self.completed: set[str] = set()
        # The statuses of batch lines, per batch, for batches not finished: the tracker's memory
        # follows the open batches, not every request ever made (a finished batch's are dropped).
        self.lines: dict[str, dict[str, StatusChanged]] = {}
        self._items: dict[str, list[dict]] = {}
        self._cancelled_at: dict[str, datetime] = {}
        self._reported: dict[str, tuple[BatchCounts, float]] = {}  # batch -> counts last published, when
        self._logged_at: dict[str, float] = {}
        self._stop_requested = False
        self.processor: Processor | None = None
        self.clock = clock
        self.finished = 0

    def _apply_batch(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, BatchSubmitted) and event.batch_id not in self.completed:
            if event.batch_id not in self.open:
                log.info("batch %s of %s: %d lines (%d rejected), due by %s", event.batch_id, event.tenant_id,
                         event.accepted, event.rejected, f"{event.deadline:%Y-%m-%d %H:%M:%S}")
            self.open.setdefault(event.batch_id, event)  # a resumed submission keeps the first one's deadline
        elif isinstance(event, BatchCompleted):
            self.completed.add(event.batch_id)
            self.open.pop(event.batch_id, None)
            self.lines.pop(event.batch_id, None)

    def _apply_status(self, record) -> None:
        if record.value is None:
            return
        status = decode_event(record.headers, record.value).event
        if not isinstance(status, StatusChanged) or status.batch_id is None or status.batch_id in self.completed:
            return
        # Kept even before the batch's own record is read (another consumer): it may come second.
        batch = self.lines.setdefault(status.batch_id, {})
        batch[status.request_id] = furthest(batch.get(status.request_id), status)

    def state_of(self, batch_id: str, request_id: str) -> RequestState | None:
        status = self.lines.get(batch_id, {}).get(request_id)
        return status.state if status is not None else None

    def is_ready(self) -> bool:
        return self.processor is not None and self.processor.ready.is_set()

    async def run(self, *, max_seconds: float | None = None) -> None:
        bootstrap = self.settings.bootstrap_servers
        # Batches first: the statuses of batches already finished are then never kept.
        tables = [TopicTable(bootstrap, self.settings.topic("framebus.batches"), self._apply_batch),
                  TopicTable(bootstrap, self.settings.topic("framebus.status"), self._apply_status)]
        try:
            for table in tables:
                await table.start(catch_up_timeout_s=300)
            for batch_id in [b for b in self.lines if b in self.completed]:
                del self.lines[batch_id]
            self.s3 = storage.s3_client(self.settings)
            # No input lanes: the tracker follows tables and checks its open batches every interval.
            # Its tables' consumers are the clients the watchdog hears from (it has no lane of its own).
            self.processor = Processor("batch-tracker", settings=self.settings,
                                       producer=stream_producer(bootstrap), outputs=OUTPUTS,
                                       ticks=[Tick("check", self.check_interval_s, self.check_all)], clock=self.clock,
                                       followers=lambda: [table.heard_at() for table in tables])
            if self._stop_requested:
                self.processor.stop()
            log.info("batch tracker ready: %d open batches, %d finished", len(self.open), len(self.completed))
            unobserve = metrics.observe("framebus.batches.open", lambda: [
                (float(sum(1 for b in list(self.open) if b not in self.completed)), {})])
            try:
                await self.processor.run(max_seconds=max_seconds)
            finally:
                unobserve()
        finally:
            for table in tables:
                await table.stop()

    def stop(self) -> None:
        self._stop_requested = True
        if self.processor is not None:
            self.processor.stop()

    async def check_all(self, now: float) -> Outputs:
        """What checking every open batch produces (cancels, progress, completions); S3 work off the event loop."""
        out = Outputs()
        at = datetime.fromtimestamp(now, UTC)
        for batch in list(self.open.values()):
            try:
                out.extend(await asyncio.to_thread(self.check, batch, at))
            except Exception:  # noqa: BLE001 - one batch's trouble must not stop the others
                log.exception("checking batch %s failed; trying again", batch.batch_id)
        return out

    def items(self, batch: BatchSubmitted) -> list[dict]:
        if batch.batch_id not in self._items:
            body = self.s3.get_object(Bucket=self.settings.s3_bucket, Key=batch.input_key)["Body"].read()
            self._items[batch.batch_id] = [json.loads(line) for line in body.splitlines() if line.strip()]
        return self._items[batch.batch_id]

    def counts(self, batch: BatchSubmitted) -> BatchCounts:
        return count_lines((item["request_id"] for item in self.items(batch)),
                           lambda request_id: self.state_of(batch.batch_id, request_id), rejected=batch.rejected)

    def check(self, batch: BatchSubmitted, now: datetime) -> Outputs:
        counts = self.counts(batch)
        if counts.ended == counts.total:
            return self.finish(batch, expired=batch.batch_id in self._cancelled_at)
        out = self._progress(batch, counts, now.timestamp())
        if now < batch.deadline:
            return out
        cancelled_at = self._cancelled_at.get(batch.batch_id)
        if cancelled_at is None:
            unfinished = [i for i in self.items(batch) if not (
                (state := self.state_of(batch.batch_id, i["request_id"])) and state.is_terminal)]
            log.info("batch %s: completion window over, cancelling %d lines", batch.batch_id, len(unfinished))
            self._cancelled_at[batch.batch_id] = now
            key = self.settings.publishing_key
            return out.extend([("framebus.control", signed_for("framebus.control", encode_event(
                CancelRequested(request_id=item["request_id"], tenant_id=batch.tenant_id,
                                reason="the batch's completion window ended"), source=SOURCE), key))
                for item in unfinished])
        if now - cancelled_at > timedelta(seconds=CANCEL_GRACE_S):
            return self.finish(batch, expired=True)
        return out

    def _progress(self, batch: BatchSubmitted, counts: BatchCounts, now: float, *, finished: bool = False) -> Outputs:
        """The batch's progress record, when its counts changed (at most every PROGRESS_INTERVAL_S)."""
        last = self._reported.get(batch.batch_id)
        if last is not None and (last[0] == counts or (now - last[1] < PROGRESS_INTERVAL_S and not finished)):
            return Outputs()
        self._reported[batch.batch_id] = (counts, now)
        if not finished and now - self._logged_at.get(batch.batch_id, 0.0) >= LOG_INTERVAL_S:
            self._logged_at[batch.batch_id] = now
            log.info("batch %s: %d of %d lines ended (%d completed, %d failed, %d cancelled), %d running, %d queued",
                     batch.batch_id, counts.ended, counts.total, counts.completed, counts.failed, counts.cancelled,
                     counts.running, counts.queued)
        return Outputs().add("framebus.batches.progress", encode_event(
            BatchProgress(batch_id=batch.batch_id, tenant_id=batch.tenant_id, counts=counts, finished=finished,
                          updated_at=datetime.fromtimestamp(now, UTC)), source=SOURCE))

    def finish(self, batch: BatchSubmitted, *, expired: bool) -> Outputs:
        """Manifest and error file to S3 (same keys on a repeat), then the completion event to send."""
        items = self.items(batch)
        lines = self.lines.get(batch.batch_id, {})
        statuses = {i["request_id"]: lines[i["request_id"]] for i in items if i["request_id"] in lines}
        _, rejected_key = input_keys(batch.tenant_id, batch.batch_id)
        try:
            rejected_body = self.s3.get_object(Bucket=self.settings.s3_bucket, Key=rejected_key)["Body"].read()
            rejected = [json.loads(line) for line in rejected_body.splitlines() if line.strip()]
        except self.s3.exceptions.NoSuchKey:
            rejected = []
        expiry_s = self.settings.batch_link_expiry_s
        written_at = datetime.now(UTC)

        def sign(key: str) -> tuple[str, datetime]:  # links live from the manifest's writing, not the result's
            return (storage.presigned_get(self.s3, self.settings.s3_bucket, key, expires_s=expiry_s),
                    written_at + timedelta(seconds=expiry_s))

        manifest = build_manifest(items, statuses, rejected, sign=sign, video_link=self.settings.video_link)
        base = f"batches/{batch.tenant_id}/{batch.batch_id}"
        manifest_key, errors_key = f"{base}/manifest.jsonl", f"{base}/errors.jsonl"
        storage.upload(self.s3, io.BytesIO(manifest.jsonl()), self.settings.s3_bucket, manifest_key,
                       content_type="application/jsonl")
        storage.upload(self.s3, io.BytesIO(manifest.errors_jsonl()), self.settings.s3_bucket, errors_key,
                       content_type="application/jsonl")
        url = sign(manifest_key)[0]
        done = BatchCompleted(batch_id=batch.batch_id, tenant_id=batch.tenant_id, counts=manifest.counts,
                              tokens=manifest.tokens, manifest_key=manifest_key, manifest_url=url,
                              errors_key=errors_key if manifest.errors else None, expired=expired,
                              webhook_url=batch.webhook_url)
        out = self._progress(batch, manifest.counts, written_at.timestamp(), finished=True)
        self.completed.add(batch.batch_id)
        for held in (self.open, self.lines, self._items, self._reported, self._logged_at, self._cancelled_at):
            held.pop(batch.batch_id, None)
        self.finished += 1
        took = written_at - batch.submitted_at
        log.info("batch %s finished%s after %s: %d completed, %d failed, %d cancelled, %d rejected; manifest %s",
                 batch.batch_id, " (window expired)" if expired else "", str(took).split(".")[0],
                 manifest.counts.completed, manifest.counts.failed, manifest.counts.cancelled,
                 manifest.counts.rejected, manifest_key)
        return out.add("framebus.batches", encode_event(done, source=SOURCE))


def run(settings: Settings | None = None) -> None:
    """Run the batch tracker in the foreground until SIGTERM or SIGINT."""
    settings = settings or Settings()
    serve("framebus-batch-tracker", settings, lambda: BatchTracker(settings))
