"""A bulk job end to end on the real broker and S3: scheduler, null worker, notifier and tracker."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from datetime import datetime

import httpx
import pytest

from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.batch.submit import submit_batch
from framebus.services.batch.view import read_batches
from framebus.services.common import storage
from framebus.services.common.children import child_env, launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.tenants import TenantAdmin
from tests.services.notifier.test_service import SECRET, Receiver
from tests.waiting import eventually


@pytest.fixture
def pipeline(server_settings: Settings, tmp_path, request):
    worker_delay_ms = getattr(request, "param", 0)
    settings = server_settings.model_copy(update={
        "topic_prefix": f"bj.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"bj-{uuid.uuid4().hex[:8]}",
        "webhook_http_hosts": frozenset({"127.0.0.1"}), "webhook_allowed_hosts": frozenset({"127.0.0.1"}),
        "webhook_retry_schedule_s": (0.3, 0.3, 0.3), "batch_link_expiry_s": 7200})
    Stack(settings).up()
    with FramebusClient(settings=settings, source="/tests") as client:
        admin = TenantAdmin(client)
        admin.create("acme")
        admin.credit("acme", 1e6)
        client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets").get(10)
    processes: list[subprocess.Popen] = [
        launch(settings, ["scheduler"], tmp_path / "scheduler.log"),
        launch(settings, ["worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", "bj-w", "--batch", "32", "--slots", "2",
                          "--heartbeat-s", "0.5", "--delay-ms", str(worker_delay_ms)], tmp_path / "worker.log"),
        launch(settings, ["notifier"], tmp_path / "notifier.log"),
        launch(settings, ["batch-tracker"], tmp_path / "tracker.log")]
    yield settings
    for process in processes:
        terminate(process.pid, timeout_s=10)


def test_500_lines_with_bad_ones_and_a_flaky_receiver(pipeline: Settings, tmp_path):
    settings = pipeline
    receiver = Receiver([500, 500, 200])  # fails its first two calls
    rng = random.Random(5)
    bad = set(rng.sample(range(1, 501), 25))
    rows = []
    for number in range(1, 501):
        row = {"custom_id": f"line-{number}", "prompt": f"prompt {number % 40}", "model": "wan-tiny", "width": 64,
               "height": 64, "num_frames": 5, "num_inference_steps": 2}
        if number in bad:
            row["width"] = 63  # not a multiple of 16
        rows.append(json.dumps(row))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")

    report = submit_batch(settings, path, "acme", webhook_url=receiver.url, completion_window_s=3600)
    assert report.accepted == 475 and sorted(n for n, _ in report.errors) == sorted(bad)
    started = read_batches(settings).summary(report.batch_id).submitted_at
    again = submit_batch(settings, path, "acme", webhook_url=receiver.url, completion_window_s=3600)
    assert (again.batch_id, again.published, again.already_in) == (report.batch_id, 0, 475), "resumable"
    assert again.resumed and read_batches(settings).summary(report.batch_id).submitted_at == started, \
        "a resumed submission keeps the batch's start and deadline"

    def verified() -> dict[str, dict]:
        from standardwebhooks import Webhook

        found = {}
        for headers, body in list(receiver.calls):
            try:
                found[headers["webhook-id"]] = Webhook(SECRET).verify(body, headers)
            except Exception:  # noqa: BLE001 - a call we answered 500 is still a valid delivery attempt
                continue
        return found

    def all_delivered() -> bool:
        # The batch webhook and the per-request ones are separate deliveries, in no promised order.
        types = [p["type"] for p in verified().values()]
        return "batch.completed" in types and sum(t.startswith("generation.") for t in types) >= 475

    assert eventually(all_delivered, timeout_s=240, interval_s=1.0)
    payloads = list(verified().values())
    per_request = [p for p in payloads if p["type"].startswith("generation.")]
    assert len(per_request) == 475 and len({p["data"]["request_id"] for p in per_request}) == 475
    [done] = [p for p in payloads if p["type"] == "batch.completed"]
    counts = done["data"]["counts"]
    assert (counts["total"], counts["completed"], counts["failed"], counts["cancelled"], counts["rejected"]) == \
        (475, 475, 0, 0, 25), "the counts add up to the file's 500 lines"
    manifest = httpx.get(done["data"]["manifest_url"], timeout=10).text.splitlines()
    lines = [json.loads(line) for line in manifest]
    assert len(lines) == 475 and {line["outcome"] for line in lines} == {"completed"}
    # Links are signed as the manifest is written, for FRAMEBUS_BATCH_LINK_EXPIRY_S (2 h here).
    expiries = {datetime.fromisoformat(line["url_expires_at"]) for line in lines}
    finished_at = datetime.fromisoformat(done["data"]["completed_at"])
    assert all(abs((at - finished_at).total_seconds() - 7200) < 30 for at in expiries)
    assert httpx.get(lines[0]["url"], timeout=10).status_code == 200
    # Finished, the batch is still there for its owner, counted by the tracker.
    summary = read_batches(settings).summary(report.batch_id)
    assert summary.state == "finished" and summary.counts.completed == 475 and summary.counts.rejected == 25
    listed = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "batch", "status", report.batch_id,
                             "--no-follow"], env=child_env(settings), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "475 completed" in listed.stdout and "25 rejected" in listed.stdout, listed
    assert {line["custom_id"] for line in lines} == {f"line-{n}" for n in range(1, 501)} - {f"line-{n}" for n in bad}
    s3 = storage.s3_client(settings)
    errors = s3.get_object(Bucket=settings.s3_bucket, Key=done["data"]["manifest_key"].replace(
        "manifest.jsonl", "errors.jsonl"))["Body"].read().decode().splitlines()
    assert sorted((json.loads(e)["line"], json.loads(e)["custom_id"]) for e in errors) == \
        sorted((n, f"line-{n}") for n in bad), "each refused line with its file line number and custom id"
    delivered_ids = [h["webhook-id"] for h, _ in receiver.calls]
    assert len(set(delivered_ids)) == 476, "one webhook-id per request, one for the batch"


@pytest.mark.parametrize("pipeline", [1500], indirect=True)  # a slow worker: the window ends first
def test_an_expired_window_cancels_the_rest_and_still_writes_the_manifest(pipeline: Settings, tmp_path):
    from framebus.schemas.codec import decode_event
    from framebus.schemas.events import BatchCompleted
    from framebus.services.common.compacted import read_all

    settings = pipeline
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"c{n}", "prompt": "slow", "model": "wan-tiny", "width": 64,
                                        "height": 64, "num_frames": 5, "num_inference_steps": 2}) + "\n"
                            for n in range(200)))
    report = submit_batch(settings, path, "acme", completion_window_s=4)

    def finished() -> BatchCompleted | None:
        for record in read_all(settings.bootstrap_servers, settings.topic("framebus.batches")).values():
            event = decode_event(record.headers, record.value).event
            if isinstance(event, BatchCompleted) and event.batch_id == report.batch_id:
                return event
        return None

    assert eventually(lambda: finished() is not None, timeout_s=150, interval_s=1.0)
    done = finished()
    assert done.expired and done.counts.total == 200
    assert done.counts.cancelled > 0 and done.counts.completed + done.counts.cancelled == 200
    lines = httpx.get(done.manifest_url, timeout=10).text.splitlines()
    assert len(lines) == 200 and {json.loads(line)["outcome"] for line in lines} <= {"completed", "cancelled"}
