"""A real gateway process (uvicorn via `framebus gateway`) on the session's Kafka."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.launcher import launch_gateway
from framebus.services.gateway.tenants import TenantAdmin


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    keys: dict[str, str]  # tenant -> API key
    admin: TenantAdmin
    process: subprocess.Popen

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


def start_gateway(settings: Settings, log_path: Path) -> tuple[subprocess.Popen, str]:
    return launch_gateway(settings, log_path, FRAMEBUS_WEBHOOK_HTTP_HOSTS='["127.0.0.1"]')


@pytest.fixture(scope="module")
def gateway(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    settings = server_settings.model_copy(update={"topic_prefix": f"gw.{uuid.uuid4().hex[:8]}.",
                                                  "s3_bucket": f"gw-{uuid.uuid4().hex[:8]}"})
    Stack(settings).up()
    client = FramebusClient(settings=settings, source="/tests")
    admin = TenantAdmin(client)
    keys = {}
    for tenant, rate in (("acme", None), ("globex", None), ("slowco", 3), ("fuzzer", 100_000)):
        admin.create(tenant, submissions_per_minute=rate)
        keys[tenant] = admin.issue_key(tenant).plaintext
    process, url = start_gateway(settings, tmp_path_factory.mktemp("gateway") / "gateway.log")
    try:
        yield RunningGateway(url, settings, keys, admin, process)
    finally:
        terminate(process.pid, timeout_s=10)
        client.close()
