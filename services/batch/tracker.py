"""`framebus batch-tracker`: finishes bulk jobs. Kafka and S3 live here; decisions in core.py.

It follows framebus.batches (which batches are open, which already completed) and
framebus.status (the latest state of every request). An open batch is finished when
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
from framebus.schemas.events import BatchCompleted, BatchSubmitted, CancelRequested
from framebus.services.batch.core import build_manifest
from framebus.services.batch.submit import input_keys
from framebus.services.common import storage
from framebus.services.common.compacted import TopicTable
from framebus.services.common.hosting import serve
from framebus.services.common.kafka import stream_producer
from framebus.services.common.processor import Outputs, Processor, Tick
from framebus.services.common.settings import Settings
from framebus.services.common.status import StatusTable

log = logging.getLogger(__name__)
SOURCE = sources.BATCH_TRACKER
OUTPUTS = ("framebus.control", "framebus.batches")
CANCEL_GRACE_S = 60.0  # after cancelling an expired batch's lines, how long to wait for them to end


class BatchTracker:
    def __init__(self, settings: Settings, *, check_interval_s: float = 1.0, clock=time.time) -> None:
        self.settings = settings
        self.check_interval_s = check_interval_s
        self.open: dict[str, BatchSubmitted] = {}
        self.completed: set[str] = set()
        self.statuses = StatusTable()
        self._items: dict[str, list[dict]] = {}
        self._cancelled_at: dict[str, datetime] = {}
        self._stop_requested = False
        self.processor: Processor | None = None
        self.clock = clock
        self.finished = 0

    def _apply_batch(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, BatchSubmitted) and event.batch_id not in self.completed:
            self.open.setdefault(event.batch_id, event)
        elif isinstance(event, BatchCompleted):
            self.completed.add(event.batch_id)
            self.open.pop(event.batch_id, None)

    def is_ready(self) -> bool:
        return self.processor is not None and self.processor.ready.is_set()

    async def run(self, *, max_seconds: float | None = None) -> None:
        bootstrap = self.settings.bootstrap_servers
        tables = [TopicTable(bootstrap, self.settings.topic("framebus.status"), self.statuses.apply_record),
                  TopicTable(bootstrap, self.settings.topic("framebus.batches"), self._apply_batch)]
        try:
            for table in tables:
                await table.start(catch_up_timeout_s=300)
            self.s3 = storage.s3_client(self.settings)
            # No input lanes: the tracker follows tables and checks its open batches every interval.
            self.processor = Processor("batch-tracker", settings=self.settings,
                                       producer=stream_producer(bootstrap), outputs=OUTPUTS,
                                       ticks=[Tick("check", self.check_interval_s, self.check_all)], clock=self.clock)
            if self._stop_requested:
                self.processor.stop()
            log.info("batch tracker ready: %d open batches", len(self.open))
            await self.processor.run(max_seconds=max_seconds)
        finally:
            for table in tables:
                await table.stop()

    def stop(self) -> None:
        self._stop_requested = True
        if self.processor is not None:
            self.processor.stop()

    async def check_all(self, now: float) -> Outputs:
        """What checking every open batch produces (cancels, completions); S3 work off the event loop."""
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

    def check(self, batch: BatchSubmitted, now: datetime) -> Outputs:
        items = self.items(batch)
        unfinished = [i for i in items if not self.statuses.is_finished(batch.tenant_id, i["request_id"])]
        if not unfinished:
            return self.finish(batch, expired=batch.batch_id in self._cancelled_at)
        if now < batch.deadline:
            return Outputs()
        cancelled_at = self._cancelled_at.get(batch.batch_id)
        if cancelled_at is None:
            log.info("batch %s: completion window over, cancelling %d lines", batch.batch_id, len(unfinished))
            self._cancelled_at[batch.batch_id] = now
            return Outputs([("framebus.control", encode_event(
                CancelRequested(request_id=item["request_id"], tenant_id=batch.tenant_id,
                                reason="the batch's completion window ended"), source=SOURCE)) for item in unfinished])
        if now - cancelled_at > timedelta(seconds=CANCEL_GRACE_S):
            return self.finish(batch, expired=True)
        return Outputs()

    def finish(self, batch: BatchSubmitted, *, expired: bool) -> Outputs:
        """Manifest and error file to S3 (same keys on a repeat), then the completion event to send."""
        items = self.items(batch)
        statuses = {i["request_id"]: s for i in items
                    if (s := self.statuses.get(batch.tenant_id, i["request_id"])) is not None}
        _, rejected_key = input_keys(batch.tenant_id, batch.batch_id)
        try:
            rejected_body = self.s3.get_object(Bucket=self.settings.s3_bucket, Key=rejected_key)["Body"].read()
            rejected = [json.loads(line) for line in rejected_body.splitlines() if line.strip()]
        except self.s3.exceptions.NoSuchKey:
            rejected = []
        manifest = build_manifest(items, statuses, rejected)
        base = f"batches/{batch.tenant_id}/{batch.batch_id}"
        manifest_key, errors_key = f"{base}/manifest.jsonl", f"{base}/errors.jsonl"
        storage.upload(self.s3, io.BytesIO(manifest.jsonl()), self.settings.s3_bucket, manifest_key,
                       content_type="application/jsonl")
        storage.upload(self.s3, io.BytesIO(manifest.errors_jsonl()), self.settings.s3_bucket, errors_key,
                       content_type="application/jsonl")
        url = storage.presigned_get(self.s3, self.settings.s3_bucket, manifest_key,
                                    expires_s=self.settings.s3_presign_expiry_s)
        done = BatchCompleted(batch_id=batch.batch_id, tenant_id=batch.tenant_id, counts=manifest.counts,
                              tokens=manifest.tokens, manifest_key=manifest_key, manifest_url=url,
                              errors_key=errors_key if manifest.errors else None, expired=expired,
                              webhook_url=batch.webhook_url)
        self.completed.add(batch.batch_id)
        self.open.pop(batch.batch_id, None)
        self._items.pop(batch.batch_id, None)
        self.finished += 1
        log.info("batch %s finished: %s", batch.batch_id, manifest.counts)
        return Outputs().add("framebus.batches", encode_event(done, source=SOURCE))


def run(settings: Settings | None = None) -> None:
    """Run the batch tracker in the foreground until SIGTERM or SIGINT."""
    settings = settings or Settings()
    serve("framebus-batch-tracker", settings, lambda: BatchTracker(settings))
