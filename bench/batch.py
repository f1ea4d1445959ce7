"""Bulk batch job benchmark on a private Kafka and S3: scheduler, null worker, tracker, notifier.

N lines through the whole pipeline with a webhook receiver on 127.0.0.1: the time from the
last line's result to ``framebus.batch.completed`` (manifest written), against the
tracker's check interval (the floor it is designed to), lines per second end to end,
and whether every webhook (one per line and ``batch.completed``) arrived.

    python -m bench.batch [--lines 2000] [--quick]

Writes bench/results/batch.json and prints a table.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import typer
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from bench.harness import Processes, private_stack, tenants
from bench.webhooks import Receiver
from framebus.client import FramebusClient
from framebus.schemas.codec import decode_event
from framebus.schemas.events import BatchCompleted
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.batch.submit import submit_batch
from framebus.services.common.machine import machine

RESULTS = Path(__file__).parent / "results" / "batch.json"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHECK_INTERVAL_S = 1.0  # BatchTracker's default
console = Console()


def last_timestamp(settings, topic: str, until) -> tuple[float, list]:
    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    seen, latest = [], 0.0
    deadline = time.monotonic() + 600
    while not until(seen) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=300).values():
            for record in records:
                seen.append((record.timestamp / 1000, decode_event(record.headers, record.value).event))
                latest = max(latest, record.timestamp / 1000)
    consumer.close()
    return latest, seen


def main(lines: int = typer.Option(2000), quick: bool = typer.Option(False)) -> None:
    n = 300 if quick else lines
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp)) as base:
        settings = base.model_copy(update={"webhook_http_hosts": frozenset({"127.0.0.1"}),
                                           "webhook_allowed_hosts": frozenset({"127.0.0.1"})})
        tenants(settings, "acme")
        with FramebusClient(settings=settings, source="/bench") as client:
            client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets").get(10)
        procs = Processes(settings, Path(tmp) / "logs")
        receiver = Receiver()
        try:
            procs.start("scheduler", "scheduler")
            procs.start("worker", "worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", "bb-w", "--batch", "32", "--slots", "2")
            procs.start("notifier", "notifier")
            procs.start("tracker", "batch-tracker")
            time.sleep(5)
            path = Path(tmp) / "lines.jsonl"
            path.write_text("".join(json.dumps({"custom_id": f"l{i}", "prompt": f"p{i % 50}", "model": "wan-tiny",
                                                "width": 64, "height": 64, "num_frames": 5,
                                                "num_inference_steps": 2}) + "\n" for i in range(n)))
            started = time.time()
            report = submit_batch(settings, path, "acme", webhook_url=receiver.url)
            done_at, batches = last_timestamp(settings, "framebus.batches", lambda seen: any(
                isinstance(e, BatchCompleted) and e.batch_id == report.batch_id for _, e in seen))
            done_at = next(t for t, e in batches if isinstance(e, BatchCompleted) and e.batch_id == report.batch_id)
            last_result, _ = last_timestamp(settings, "framebus.results", lambda seen: len(seen) >= n)
            webhook_deadline = time.monotonic() + 120
            while receiver.count < n + 1 and time.monotonic() < webhook_deadline:
                time.sleep(0.1)
            webhook_at = time.time()
        finally:
            procs.stop_all()
    out = {"lines": n, "end_to_end_s": done_at - started, "lines_per_s": n / (done_at - started),
           "last_result_to_batch_completed_s": done_at - last_result,
           "ratio_to_check_interval": (done_at - last_result) / CHECK_INTERVAL_S,
           "webhooks_received": receiver.count, "last_result_to_all_webhooks_s": webhook_at - last_result}
    table = Table("measure", "value", title=f"a batch of {n:,} lines, null worker", title_justify="left")
    table.add_row("submit to batch.completed", f"{out['end_to_end_s']:.1f} s ({out['lines_per_s']:,.0f} lines/s)")
    table.add_row("last result to batch.completed (manifest in S3)",
                  f"{out['last_result_to_batch_completed_s']:.2f} s = {out['ratio_to_check_interval']:.1f}x "
                  f"the tracker's {CHECK_INTERVAL_S:g} s check interval")
    table.add_row("webhooks received (per line + batch.completed)", f"{receiver.count:,} of {n + 1:,}")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    console.print(f"measured on {machine()}")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    typer.run(main)
