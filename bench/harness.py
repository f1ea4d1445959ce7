"""Shared by the benchmarks: a private local stack, tenants, and the pipeline's processes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from framebus.client import FramebusClient
from framebus.infra.process import free_port, terminate
from framebus.services.common.children import launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.tenants import TenantAdmin


@contextlib.contextmanager
def private_stack(tmp: Path, **overrides) -> Iterator[Settings]:
    """Kafka and S3 of its own on free ports (never the user's `framebus up` stack), provisioned."""
    _exit_on_sigterm()
    settings = Settings(kafka_bootstrap=None, s3_endpoint=None, kafka_port=free_port(),
                        kafka_controller_port=free_port(), s3_port=free_port(), kafka_heap="1g",
                        state_dir=tmp / "state", topic_prefix=f"bench.{uuid.uuid4().hex[:6]}.", **overrides)
    stack = Stack(settings)
    stack.up()
    try:
        yield settings.model_copy(update={"kafka_bootstrap": settings.bootstrap_servers,
                                          "s3_endpoint": settings.s3_endpoint_url, "kafka_replication_factor": 1})
    finally:
        stack.down(purge=True)


def _exit_on_sigterm() -> None:
    """`timeout` and CI stop a bench with SIGTERM: exit through the context managers, so the
    private broker, S3 server and launched processes are stopped, not orphaned."""
    def stop(signum, frame) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def tenants(settings: Settings, *names: str, tokens: float = 1e9) -> None:
    with FramebusClient(settings=settings, source="/bench") as client:
        admin = TenantAdmin(client)
        for name in names:
            admin.create(name, submissions_per_minute=100_000)
            admin.credit(name, tokens)


class Processes:
    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs, self.running = settings, logs, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        process = launch(self.settings, list(args), self.logs / f"{name}.log")
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            terminate(process.pid, timeout_s=10)
        self.running.clear()
