"""Three brokers, three copies of every record, two needed for a write: kill one broker mid-run
and every request still ends exactly once, charged exactly once."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from framebus.client import FramebusClient
from framebus.infra.kafka.cluster import loopback_cluster, start_all
from framebus.infra.process import terminate
from framebus.kafka import read_since
from framebus.schemas.codec import decode_event
from framebus.services.common.children import launch
from framebus.services.common.kafka import admin_client
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.tenants import TenantAdmin

REQUESTS = 60


def test_a_broker_killed_mid_run_loses_and_doubles_nothing(server_settings: Settings, tmp_path: Path,
                                                           infra_cache_dir: Path) -> None:
    brokers = loopback_cluster(3, tmp_path / "cluster", infra_cache_dir)
    start_all(brokers)
    processes = []
    try:
        settings = server_settings.model_copy(update={
            "kafka_bootstrap": ",".join(b.endpoint for b in brokers), "kafka_replication_factor": None,
            "topic_prefix": f"c3.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"c3-{uuid.uuid4().hex[:8]}",
            "tenant": "acme", "scheduler_worker_timeout_s": 5.0})
        assert settings.replication.factor == 3 and settings.replication.min_insync == 2
        Stack(settings).up()
        admin = admin_client(settings.bootstrap_servers)
        try:
            described = admin.describe_topics([settings.topic("framebus.ledger")])
            assert {len(p["replica_nodes"]) for p in described[0]["partitions"]} == {3}
        finally:
            admin.close()
        client = FramebusClient(settings=settings, source="/tests")
        tenants = TenantAdmin(client)
        tenants.create("acme")
        tenants.credit("acme", 100_000)
        processes = [launch(settings, args, tmp_path / f"{args[0]}.log") for args in (
            ["scheduler"], ["metering"],
            ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "c3-w", "--delay-ms", "200",
             "--batch", "8", "--heartbeat-s", "0.5"])]
        ids = [f"c3-{n}" for n in range(REQUESTS)]
        handles = []
        for n, request_id in enumerate(ids):
            handles.append(client.submit({"request_id": request_id, "prompt": "a red circle moving left"}))
            if n == REQUESTS // 3:
                _kill(brokers[1])  # mid-run, no goodbye
            time.sleep(0.05)
        results = [handle.wait(timeout=240) for handle in handles]
        assert Counter(r.state.value for r in results) == {"completed": REQUESTS}
        deadline = time.monotonic() + 90
        while len(ended := settled(settings)) < REQUESTS and time.monotonic() < deadline:
            time.sleep(1)  # metering settles each result a moment after it lands
        assert ended == dict.fromkeys(ids, 1), "each request settled (charged) exactly once"
        client.close()
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        for broker in brokers:
            broker.stop()


def settled(settings: Settings) -> Counter:
    return Counter(decode_event(r.headers, r.value).event.request_id
                   for r in read_since(settings.bootstrap_servers, settings.topic("framebus.usage"), 900))


def _kill(broker) -> None:
    record = broker.running()
    assert record is not None
    import os

    os.kill(record.pid, signal.SIGKILL)
