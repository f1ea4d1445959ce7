"""What an operator sees of a running pipeline: every service answers /healthz, /readyz and
/metrics (Prometheus text whose figures move when work flows), readiness that means something,
and `framebus ps` listing them all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.cli.ps import running
from framebus.services.common.children import child_env
from framebus.services.common.settings import Settings
from tests.services.notifier.test_service import SECRET, Receiver
from tests.services.scheduler.conftest import running_pipeline
from tests.waiting import eventually

SERVICES = ("framebus-scheduler", "framebus-worker", "framebus-metering", "framebus-notifier", "framebus-batch-tracker")


def samples(url: str) -> dict[str, list]:
    """Every sample of a service's /metrics, by sample name (the text must parse as Prometheus)."""
    answer = httpx.get(f"{url}/metrics", timeout=5)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def total(found: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_service_reports_health_readiness_and_metrics_that_move(server_settings: Settings,
                                                                        tmp_path: Path) -> None:
    receiver = Receiver([200])
    pipelines = running_pipeline(server_settings, tmp_path, state_dir=tmp_path / "state",
                                 webhook_http_hosts=frozenset({"127.0.0.1"}),
                                 webhook_allowed_hosts=frozenset({"127.0.0.1"}))
    pipeline = next(pipelines)
    try:
        settings = pipeline.settings
        pipeline.client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets")
        active = pipeline.start_scheduler()
        pipeline.start_worker("w1")
        for name in ("metering", "notifier", "batch-tracker"):
            pipeline.start([name], f"{name}.log")

        def by_service() -> dict[str, list]:
            found: dict[str, list] = {}
            for process in running(settings.state_dir):
                found.setdefault(process.service, []).append(process)
            return found

        assert eventually(lambda: all(p.status == "ready" for s in SERVICES for p in by_service().get(s, [None]) if p)
                          and set(SERVICES) <= set(by_service()), timeout_s=90, interval_s=0.5), \
            f"not all ready: {by_service()}"
        # A second scheduler is a standby: alive, not ready, until it holds the lease.
        standby = pipeline.start(["scheduler"], "standby.log")
        assert eventually(lambda: any(p.pid == standby.pid for p in by_service().get("framebus-scheduler", [])),
                          timeout_s=60, interval_s=0.5)
        [waiting] = [p for p in by_service()["framebus-scheduler"] if p.pid == standby.pid]
        assert httpx.get(f"{waiting.url}/healthz", timeout=5).status_code == 200
        not_ready = httpx.get(f"{waiting.url}/readyz", timeout=5)
        assert (not_ready.status_code, not_ready.json()["status"]) == (503, "starting")
        urls = {service: processes[0].url for service, processes in by_service().items()}
        urls["framebus-scheduler"] = next(p.url for p in by_service()["framebus-scheduler"] if p.pid == active.pid)
        before = {service: samples(url) for service, url in urls.items()}

        # Work flows: requests in two tiers, one poison record.
        for n in range(6):
            pipeline.client.submit({"request_id": f"m-{n}", "prompt": "a red circle moving left", "model": "wan-tiny",
                                    "tier": "interactive" if n % 2 else "standard", "webhook_url": receiver.url})
        poison = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        poison.send(settings.topic("framebus.requests.standard"), b"{not json", key=b"acme").get(timeout=30)
        poison.close()
        assert eventually(lambda: len(receiver.calls) >= 6, timeout_s=90, interval_s=0.5), "webhooks not delivered"

        def moved() -> dict[str, dict]:
            return {service: samples(url) for service, url in urls.items()}

        def grown(after: dict, service: str, name: str, at_least: float, **labels: str) -> bool:
            return total(after[service], name, **labels) - total(before[service], name, **labels) >= at_least

        expectations = [
            ("framebus-scheduler", "framebus_admissions_total", 6, {"decision": "queued"}),
            ("framebus-scheduler", "framebus_queue_wait_seconds_count", 3, {"tier": "interactive"}),
            ("framebus-scheduler", "framebus_dead_letters_total", 1, {}),
            ("framebus-scheduler", "framebus_records_handled_total", 4, {"lane": "standard"}),
            ("framebus-worker", "framebus_batch_size_count", 1, {}),
            ("framebus-worker", "framebus_denoise_steps_total", 1, {"outcome": "run"}),
            ("framebus-metering", "framebus_tokens_settled_total", 0.001, {"tenant": "acme"}),
            ("framebus-metering", "framebus_request_duration_seconds_count", 6, {"outcome": "completed"}),
            ("framebus-notifier", "framebus_webhook_attempts_total", 6, {"outcome": "delivered"}),
        ]
        assert eventually(lambda: all(grown(moved(), s, n, v, **labels) for s, n, v, labels in expectations),
                          timeout_s=30, interval_s=1.0), \
            [(s, n, labels) for s, n, v, labels in expectations if not grown(moved(), s, n, v, **labels)]
        after = moved()
        assert total(after["framebus-worker"], "framebus_worker_busy_seconds_total") > 0
        assert total(after["framebus-worker"], "framebus_worker_ready") == 1
        assert {s.labels["tier"] for s in after["framebus-scheduler"]["framebus_queue_depth"]} >= {
            "interactive", "standard", "batch"}
        assert "framebus_consumer_lag" in after["framebus-metering"], "lag per input topic is exported"
        assert "framebus_batches_open" in after["framebus-batch-tracker"]

        # `framebus ps` shows every process, the standby as not ready.
        shown = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "ps", "--json"],
                               env={**child_env(settings), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        listed = [json.loads(line) for line in shown.stdout.splitlines()]
        assert {p["service"] for p in listed} == set(SERVICES)
        assert sorted(p["status"] for p in listed if p["service"] == "framebus-scheduler") == ["ready", "starting"]
        table = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "ps"],
                               env={**child_env(settings), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)
        print(table.stdout)
        assert table.returncode == 0 and "metering" in table.stdout and "ready" in table.stdout
    finally:
        next(pipelines, None)
