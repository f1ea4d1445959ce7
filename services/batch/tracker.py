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
from datetime import UTC, datetime, timedelta

from framebus.schemas.codec import decode_event
from framebus.schemas.events import BatchCompleted, BatchSubmitted, CancelRequested
from framebus.services.batch.core import build_manifest
from framebus.services.batch.submit import input_keys
from framebus.services.common import storage
from framebus.services.common.compacted import TopicTable
from framebus.services.common.settings import Settings
from framebus.services.common.status import StatusTable
from framebus.client import FramebusClient

log = logging.getLogger(__name__)
CANCEL_GRACE_S = 60.0  # after cancelling an expired batch's lines, how long to wait for them to end


class BatchTracker:
    def __init__(self, settings: Settings, *, check_interval_s: float = 1.0) -> None:
        self.settings = settings
        self.check_interval_s = check_interval_s
        self.open: dict[str, BatchSubmitted] = {}
        self.completed: set[str] = set()
        self.statuses = StatusTable()
        self._items: dict[str, list[dict]] = {}
        self._cancelled_at: dict[str, datetime] = {}
        self._stop = asyncio.Event()
        self.finished = 0

    def _apply_batch(self, record) -> None:
        event = decode_event(record.headers, record.value).event
        if isinstance(event, BatchSubmitted) and event.batch_id not in self.completed:
            self.open.setdefault(event.batch_id, event)
        elif isinstance(event, BatchCompleted):
            self.completed.add(event.batch_id)
            self.open.pop(event.batch_id, None)

    async def run(self, *, max_seconds: float | None = None) -> None:
        bootstrap = self.settings.bootstrap_servers
        tables = [TopicTable(bootstrap, self.settings.topic("framebus.status"), self.statuses.apply_record),
                  TopicTable(bootstrap, self.settings.topic("framebus.batches"), self._apply_batch)]
        for table in tables:
            await table.start(catch_up_timeout_s=300)
        self.s3 = storage.s3_client(self.settings)
        self.client = FramebusClient(settings=self.settings, source="/framebus/batch-tracker")
        log.info("batch tracker ready: %d open batches", len(self.open))
        deadline = None if max_seconds is None else asyncio.get_running_loop().time() + max_seconds
        try:
            while not self._stop.is_set():
                for batch in list(self.open.values()):
                    try:
                        await asyncio.to_thread(self.check, batch, datetime.now(UTC))
                    except Exception:  # noqa: BLE001 - one batch's trouble must not stop the others
                        log.exception("checking batch %s failed; trying again", batch.batch_id)
                if deadline is not None and asyncio.get_running_loop().time() > deadline:
                    break
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.check_interval_s)
                except TimeoutError:
                    pass
        finally:
            for table in tables:
                await table.stop()
            self.client.close()

    def stop(self) -> None:
        self._stop.set()

    def items(self, batch: BatchSubmitted) -> list[dict]:
        if batch.batch_id not in self._items:
            body = self.s3.get_object(Bucket=self.settings.s3_bucket, Key=batch.input_key)["Body"].read()
            self._items[batch.batch_id] = [json.loads(line) for line in body.splitlines() if line.strip()]
        return self._items[batch.batch_id]

    def check(self, batch: BatchSubmitted, now: datetime) -> None:
        items = self.items(batch)
        unfinished = [i for i in items if not self.statuses.is_finished(batch.tenant_id, i["request_id"])]
        if not unfinished:
            self.finish(batch, expired=batch.batch_id in self._cancelled_at)
            return
        if now < batch.deadline:
            return
        cancelled_at = self._cancelled_at.get(batch.batch_id)
        if cancelled_at is None:
            log.info("batch %s: completion window over, cancelling %d lines", batch.batch_id, len(unfinished))
            for item in unfinished:
                self.client.publish(CancelRequested(request_id=item["request_id"], tenant_id=batch.tenant_id,
                                                    reason="the batch's completion window ended"),
                                    "framebus.control")
            self.client.flush()
            self._cancelled_at[batch.batch_id] = now
        elif now - cancelled_at > timedelta(seconds=CANCEL_GRACE_S):
            self.finish(batch, expired=True)

    def finish(self, batch: BatchSubmitted, *, expired: bool) -> None:
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
        self.client.publish(done, "framebus.batches").get(timeout=self.settings.submit_deadline_s)
        self.completed.add(batch.batch_id)
        self.open.pop(batch.batch_id, None)
        self._items.pop(batch.batch_id, None)
        self.finished += 1
        log.info("batch %s finished: %s", batch.batch_id, manifest.counts)


def run(settings: Settings | None = None) -> None:
    import signal

    tracker = BatchTracker(settings or Settings())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, tracker.stop)
        await tracker.run()

    asyncio.run(main())
