"""A running pipeline for scheduler tests: the real scheduler and null workers as processes."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.schemas.codec import decode_event
from framebus.services.common.children import launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.tenants import TenantAdmin


@dataclass
class Pipeline:
    settings: Settings
    logs: Path
    client: FramebusClient
    admin: TenantAdmin
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start_scheduler(self) -> subprocess.Popen:
        process = launch(self.settings, ["scheduler"], self.logs / "scheduler.log")
        self.processes.append(process)
        return process

    def start_worker(self, worker_id: str, *, delay_ms: float = 0, batch: int = 4, slots: int = 2) -> subprocess.Popen:
        process = launch(self.settings, ["worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", worker_id, "--delay-ms", str(delay_ms), "--batch",
                                         str(batch), "--slots", str(slots), "--heartbeat-s", "0.5"],
                         self.logs / f"worker-{worker_id}.log")
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def records(self, topic: str, *, until: int, timeout_s: float = 90) -> list:
        """Every record on ``topic`` (from the beginning) once at least ``until`` are there, or at the timeout."""
        consumer = KafkaConsumer(self.settings.topic(topic), bootstrap_servers=self.settings.bootstrap_servers,
                                 auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
        found: list = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < until and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    found.extend(batch)
        finally:
            consumer.close()
        return found

    def results(self, *, until: int, timeout_s: float = 90) -> list:
        return [decode_event(r.headers, r.value).event for r in self.records("framebus.results", until=until,
                                                                              timeout_s=timeout_s)]

    def log(self, name: str) -> str:
        return (self.logs / name).read_text(errors="replace")[-3000:]


@pytest.fixture
def pipeline(server_settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    settings = server_settings.model_copy(update={
        "topic_prefix": f"p.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"p-{uuid.uuid4().hex[:8]}",
        "scheduler_worker_timeout_s": 3.0, "tenant": "acme"})
    Stack(settings).up()
    client = FramebusClient(settings=settings, source="/tests")
    admin = TenantAdmin(client)
    for tenant, tokens in (("acme", 10_000.0), ("poor", 0.001)):
        admin.create(tenant)
        admin.credit(tenant, tokens)
    made = Pipeline(settings, tmp_path, client, admin)
    try:
        yield made
    finally:
        for process in made.processes:
            terminate(process.pid, timeout_s=10)
        client.close()
