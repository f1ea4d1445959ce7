"""Run the gateway as a child process and wait until it is ready (tests, benchmarks)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from framebus.infra.process import free_port, terminate
from framebus.services.common.children import launch
from framebus.services.common.errors import FramebusError
from framebus.services.common.settings import Settings


def launch_gateway(settings: Settings, log_path: Path, *, timeout_s: float = 60.0, port: int | None = None,
                   **extra_env: str) -> tuple[subprocess.Popen, str]:
    """Start `framebus gateway` on ``port`` (default: a free one); return the process and its base URL
    once /readyz says ready."""
    port = port or free_port()
    process = launch(settings, ["gateway"], log_path, FRAMEBUS_GATEWAY_PORT=str(port), **extra_env)
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
