"""`framebus batch submit`: validate a JSONL file, record its index in S3, publish its lines.

Resumable: the batch id is derived from the tenant and the file's content, request ids
from the batch id and each custom id, and lines whose request already has a status are
skipped. Re-running the same command after a crash publishes only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framebus.client import FramebusClient
from framebus.kafka import read_all
from framebus.schemas.events import BatchSubmitted, status_key
from framebus.services.batch.core import ParsedBatch, batch_id_for, parse_lines
from framebus.services.batch.view import read_batches
from framebus.services.common import storage
from framebus.services.common.errors import FramebusError
from framebus.services.common.settings import Settings

CHUNK = 500


class BatchRefused(FramebusError):
    pass


@dataclass
class SubmitReport:
    batch_id: str
    accepted: int
    errors: list[tuple[int, str]]
    published: int = 0
    already_in: int = 0
    strict_refused: bool = False
    input_key: str = ""
    notes: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"line", "custom_id", "error"} per refused line
    resumed: bool = False  # the batch was submitted before: its start and deadline stand


def input_keys(tenant_id: str, batch_id: str) -> tuple[str, str]:
    base = f"batches/{tenant_id}/{batch_id}"
    return f"{base}/input.jsonl", f"{base}/rejected.jsonl"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def submit_batch(settings: Settings, path: Path, tenant_id: str, *, webhook_url: str | None = None,
                 completion_window_s: float = 86400.0, strict: bool = False,
                 on_progress: Callable[[int, int], None] = lambda done, total: None) -> SubmitReport:
    size = path.stat().st_size
    if size > settings.batch_max_bytes:
        raise BatchRefused(f"{path.name} is {size:,} bytes; a batch file may be at most "
                           f"{settings.batch_max_bytes:,} bytes (FRAMEBUS_BATCH_MAX_BYTES): split it")
    batch_id = batch_id_for(tenant_id, file_digest(path))
    with open(path, "rb") as handle:
        parsed: ParsedBatch = parse_lines(handle, batch_id)
    report = SubmitReport(batch_id, len(parsed.lines), parsed.errors, rejected=parsed.rejected())
    if strict and parsed.errors:
        report.strict_refused = True
        return report
    if not parsed.lines:
        raise BatchRefused(f"{path.name} has no valid line; see the errors above")
    client_s3 = storage.s3_client(settings)
    report.input_key, rejected_key = input_keys(tenant_id, batch_id)
    index = "".join(json.dumps({"line": line.line, "custom_id": line.custom_id, "request_id": line.request_id}) + "\n"
                    for line in parsed.lines).encode()
    rejected = "".join(json.dumps(line) + "\n" for line in report.rejected).encode()
    storage.upload(client_s3, io.BytesIO(index), settings.s3_bucket, report.input_key, content_type="application/jsonl")
    storage.upload(client_s3, io.BytesIO(rejected), settings.s3_bucket, rejected_key,
                   content_type="application/jsonl")
    known = {key for key in read_all(settings.bootstrap_servers, settings.topic("framebus.status"), timeout_s=120)}
    todo = [line for line in parsed.lines if status_key(tenant_id, line.request_id).encode() not in known]
    report.already_in = len(parsed.lines) - len(todo)
    report.resumed = read_batches(settings).summary(batch_id) is not None
    with FramebusClient(tenant_id=tenant_id, settings=settings, source="/framebus/batch") as client:
        if not report.resumed:  # a resumed batch keeps its first submission: its start and deadline
            client.publish(BatchSubmitted(batch_id=batch_id, tenant_id=tenant_id, accepted=len(parsed.lines),
                                          rejected=len(parsed.errors), input_key=report.input_key,
                                          webhook_url=webhook_url, completion_window_s=completion_window_s),
                           "framebus.batches").get(timeout=settings.submit_deadline_s)
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            client.submit_many([{**line.fields, "request_id": line.request_id, "tier": "batch",
                                 "batch_id": batch_id, "custom_id": line.custom_id, "webhook_url": webhook_url}
                                for line in chunk])
            report.published += len(chunk)
            on_progress(report.published, len(todo))
    return report
