"""One request through the real stack (scheduler, null worker, metering, notifier) is one trace:
every hop continues the trace the producer started, and the tree holds every stage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.common.children import child_env
from framebus.services.common.settings import Settings
from framebus.services.common.telemetry import read_spans
from tests.services.notifier.test_service import SECRET, Receiver
from tests.services.scheduler.conftest import running_pipeline
from tests.waiting import eventually

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
# (`encode` too on a real engine: the null engine encodes each colour once and shares the clip.)
EVERY_HOP = {"admit", "queue wait", "dispatch", "batch", "denoise", "vae decode", "upload", "settle",
             "webhook attempt"}


def test_a_request_is_one_trace_from_the_producer_to_its_webhook(server_settings: Settings, tmp_path: Path) -> None:
    spans_dir = tmp_path / "spans"
    receiver = Receiver([500, 200])  # the first attempt fails: two attempt spans
    pipelines = running_pipeline(server_settings, tmp_path, telemetry=f"jsonl:{spans_dir}",
                                 webhook_http_hosts=frozenset({"127.0.0.1"}),
                                 webhook_allowed_hosts=frozenset({"127.0.0.1"}), webhook_retry_schedule_s=(0.3,))
    pipeline = next(pipelines)
    try:
        settings = pipeline.settings
        pipeline.client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets")
        pipeline.start_scheduler()
        pipeline.start_worker("w1")
        pipeline.start(["metering"], "metering.log")
        pipeline.start(["notifier"], "notifier.log")
        # A producer that traces on its own side: its trace is continued, not replaced.
        receipt = pipeline.client.submit({"request_id": "traced-1", "prompt": "a red circle moving left",
                                          "model": "wan-tiny", "webhook_url": receiver.url},
                                         traceparent=f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01")

        def names() -> set[str]:
            return {s["name"] for s in read_spans(spans_dir) if s["trace_id"] == PRODUCER_TRACE}

        assert eventually(lambda: EVERY_HOP <= names() and len(receiver.calls) >= 2, timeout_s=120, interval_s=0.5), \
            f"spans so far: {sorted(names())}"
        time.sleep(0.5)
        spans = [s for s in read_spans(spans_dir) if s["trace_id"] == PRODUCER_TRACE]
        by_id = {s["span_id"]: s for s in spans}
        [admit] = [s for s in spans if s["name"] == "admit"]
        assert admit["parent_id"] == PRODUCER_SPAN, "the scheduler continues the producer's span"
        orphans = [s["name"] for s in spans if s is not admit and s["parent_id"] not in by_id]
        assert orphans == [], "one connected tree under the producer's span"

        def parent_of(name: str) -> str:
            [span] = [s for s in spans if s["name"] == name]
            return by_id[span["parent_id"]]["name"]

        assert parent_of("queue wait") == "admit" and parent_of("dispatch") == "admit"
        assert parent_of("batch") == "dispatch" and parent_of("denoise") == "batch"
        assert parent_of("settle") == "batch"
        attempts = [s for s in spans if s["name"] == "webhook attempt"]
        assert sorted(s["attributes"]["http.response.status_code"] for s in attempts) == [200, 500]
        assert {by_id[s["parent_id"]]["name"] for s in attempts} == {"batch"}
        [queued] = [s for s in spans if s["name"] == "queue wait"]
        assert queued["attributes"]["framebus.tier"] == "standard"
        [batch] = [s for s in spans if s["name"] == "batch"]
        assert batch["attributes"]["framebus.batch_size"] == 1 and batch["attributes"]["framebus.outcome"] == "completed"
        services = {s["service"] for s in spans}
        assert services == {"framebus-scheduler", "framebus-worker", "framebus-metering", "framebus-notifier"}

        # `framebus trace` draws that tree from the span files.
        shown = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "trace", receipt.request_id],
                               env={**child_env(settings), "COLUMNS": "200"}, capture_output=True, text=True,
                               timeout=60)
        print(shown.stdout)
        assert shown.returncode == 0, shown.stderr
        for name in ("admit", "queue wait", "dispatch", "denoise", "settle", "webhook attempt"):
            assert name in shown.stdout, shown.stdout
    finally:
        next(pipelines, None)
