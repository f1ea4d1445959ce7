"""Run the gateway as a child process and wait until it is ready (tests, benchmarks, the demo)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from infra.process import free_port, terminate
from services.common.errors import FramebusError
from services.common.settings import Settings


def gateway_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    """The environment that makes a child `framebus gateway` see ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_")}
    env.update({
        "FRAMEBUS_KAFKA_BOOTSTRAP": settings.bootstrap_servers, "FRAMEBUS_S3_ENDPOINT": settings.s3_endpoint_url,
        "FRAMEBUS_S3_ACCESS_KEY": settings.s3_access_key,
        "FRAMEBUS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "FRAMEBUS_TOPIC_PREFIX": settings.topic_prefix, "FRAMEBUS_GATEWAY_PORT": str(port),
        "FRAMEBUS_GATEWAY_SUBMISSIONS_PER_MINUTE": str(settings.gateway_submissions_per_minute),
        "FRAMEBUS_SUBMIT_DEADLINE_S": str(settings.submit_deadline_s), **extra,
    })
    return env


def launch_gateway(settings: Settings, log_path: Path, *, timeout_s: float = 60.0,
                   **extra_env: str) -> tuple[subprocess.Popen, str]:
    """Start `framebus gateway` on a free port; return the process and its base URL once /readyz says ready."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.cli.main", "gateway"],
                                   env=gateway_env(settings, port, **extra_env), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FramebusError(f"gateway exited with code {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).json()["status"] == "ready":
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    terminate(process.pid, timeout_s=5)
    raise FramebusError(f"gateway was not ready within {timeout_s:g}s; see {log_path}")
