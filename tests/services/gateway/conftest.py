"""A real gateway process (uvicorn via `framebus gateway`) on the session's Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from framebus.client import FramebusClient
from infra.process import free_port, terminate
from services.common.settings import Settings
from services.common.stack import Stack
from services.gateway.tenants import TenantAdmin


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
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_")}
    env.update({
        "FRAMEBUS_KAFKA_BOOTSTRAP": settings.bootstrap_servers, "FRAMEBUS_S3_ENDPOINT": settings.s3_endpoint_url,
        "FRAMEBUS_TOPIC_PREFIX": settings.topic_prefix, "FRAMEBUS_GATEWAY_PORT": str(port),
        "FRAMEBUS_GATEWAY_SUBMISSIONS_PER_MINUTE": str(settings.gateway_submissions_per_minute),
        "FRAMEBUS_WEBHOOK_HTTP_HOSTS": '["127.0.0.1"]', "FRAMEBUS_SUBMIT_DEADLINE_S": "10",
    })
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "services.cli.main", "gateway"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).json()["status"] == "ready":
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(process.pid, timeout_s=5)
    raise RuntimeError(f"gateway not ready in 60s: {log_path.read_text()[-2000:]}")


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
