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
    launched: dict[int, tuple[list[str], Path]] = field(default_factory=dict)  # pid -> (args, log)
    restarted: list[str] = field(default_factory=list)  # logs of processes relaunched after exiting

    def start(self, args: list[str], log_name: str) -> subprocess.Popen:
        process = launch(self.settings, args, self.logs / log_name)
        self.processes.append(process)
        self.launched[process.pid] = (args, self.logs / log_name)
        return process

    def relaunch_exited(self) -> None:
        """Play the supervisor (Kubernetes, compose): start again whatever exited on its own."""
        for process in list(self.processes):
            if process.poll() is not None and process.pid in self.launched:
                args, log_path = self.launched.pop(process.pid)
                self.processes.remove(process)
                self.restarted.append(log_path.name)
                self.start(args, log_path.name)

    def start_scheduler(self) -> subprocess.Popen:
        return self.start(["scheduler"], "scheduler.log")

    def start_worker(self, worker_id: str, *, delay_ms: float = 0, batch: int = 4, slots: int = 2) -> subprocess.Popen:
        return self.start(["worker", "--engine", "null", "--model", "wan-tiny", "--worker-id", worker_id,
                           "--delay-ms", str(delay_ms), "--batch", str(batch), "--slots", str(slots),
                           "--heartbeat-s", "0.5"], f"worker-{worker_id}.log")

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
    yield from running_pipeline(server_settings, tmp_path)


def running_pipeline(server_settings: Settings, tmp_path: Path, **changes) -> Iterator[Pipeline]:
    """Topics under a fresh prefix, a bucket, tenants acme (in credit) and poor; processes stopped at the end."""
    settings = server_settings.model_copy(update={
        "topic_prefix": f"p.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"p-{uuid.uuid4().hex[:8]}",
        "scheduler_worker_timeout_s": 3.0, "tenant": "acme", **changes})
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
