"""Every program in examples/ runs as written against the real stack, and the README's receiver
is the program that is tested.

One stack for the module: gateway, scheduler, a null worker, the notifier and the batch
tracker as processes on the session's Kafka and S3, and examples/webhook_receiver.py under
uvicorn with the tenant's signing secret.
"""

from __future__ import annotations

import re
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
from framebus.infra.process import free_port, terminate
from framebus.services.common.children import child_env, launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.launcher import launch_gateway
from framebus.services.gateway.tenants import TenantAdmin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass
class ExampleStack:
    settings: Settings
    gateway_url: str
    api_key: str
    receiver_url: str
    receiver_log: Path
    logs: Path

    def run(self, *args: str, timeout_s: float = 180, **env: str) -> subprocess.CompletedProcess:
        environment = child_env(self.settings, FRAMEBUS_GATEWAY_URL=self.gateway_url,
                                FRAMEBUS_API_KEY=self.api_key, **env)
        done = subprocess.run([sys.executable, *args], cwd=self.logs, env=environment, capture_output=True,
                              text=True, timeout=timeout_s)
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done


@pytest.fixture(scope="module")
def stack(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleStack]:
    port = free_port()
    settings = server_settings.model_copy(update={
        "topic_prefix": f"ex.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"ex-{uuid.uuid4().hex[:8]}", "tenant": "acme",
        "gateway_port": port, "gateway_public_url": f"http://127.0.0.1:{port}",
        "webhook_http_hosts": frozenset({"127.0.0.1"}), "webhook_allowed_hosts": frozenset({"127.0.0.1"})})
    logs = tmp_path_factory.mktemp("examples")
    Stack(settings).up()
    admin = TenantAdmin(FramebusClient(settings=settings, source="/tests"))
    admin.create("acme")
    admin.credit("acme", 1_000_000)
    key = admin.issue_key("acme").plaintext
    secret = admin.rotate_webhook_secret("acme").secrets[0]
    receiver_port = free_port()
    processes = [
        launch(settings, ["scheduler"], logs / "scheduler.log"),
        launch(settings, ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "ex-w",
                          "--delay-ms", "300", "--batch", "8", "--slots", "2", "--heartbeat-s", "0.5"],
               logs / "worker.log"),
        launch(settings, ["notifier"], logs / "notifier.log"),
        launch(settings, ["batch-tracker"], logs / "tracker.log"),
        subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.webhook_receiver:app", "--port",
                          str(receiver_port)], cwd=ROOT, env=child_env(settings, FRAMEBUS_WEBHOOK_SECRET=secret),
                         stdout=open(logs / "receiver.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)]
    try:
        gateway, url = launch_gateway(settings, logs / "gateway.log", port=port,
                                      FRAMEBUS_WEBHOOK_HTTP_HOSTS='["127.0.0.1"]')
        processes.append(gateway)
        yield ExampleStack(settings, url, key, f"http://127.0.0.1:{receiver_port}/webhooks/framebus",
                           logs / "receiver.log", logs)
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        admin.client.close()


def test_submit_over_http_shows_progress_and_saves_the_mp4(stack: ExampleStack) -> None:
    done = stack.run(str(EXAMPLES / "submit_http.py"), "a red circle moving left on a white background", "clip.mp4")
    assert re.search(r"^  denoising \d+/20$", done.stdout, flags=re.M) and "  completed" in done.stdout, done.stdout
    assert (stack.logs / "clip.mp4").read_bytes()[4:8] == b"ftyp"


def test_publish_over_kafka_and_follow_it_there(stack: ExampleStack) -> None:
    done = stack.run(str(EXAMPLES / "publish_kafka.py"), "a blue square moving up on a black background")
    assert re.search(r"^completed: http", done.stdout, flags=re.M), done.stdout


def test_async_fan_out_of_fifty(stack: ExampleStack) -> None:
    done = stack.run(str(EXAMPLES / "async_fan_out.py"), "50")
    assert done.stdout.strip().endswith("50 completed"), done.stdout


def test_bulk_overnight_job_ends_with_a_manifest(stack: ExampleStack) -> None:
    (stack.logs / "prompts.txt").write_text("".join(f"a green triangle moving right, take {n}\n" for n in range(5)))
    done = stack.run(str(EXAMPLES / "bulk_overnight.py"), "prompts.txt", POLL_S="1")
    assert "5 accepted, 0 rejected" in done.stdout and done.stdout.strip().endswith("5 of 5 completed"), done.stdout


def test_the_webhook_receiver_verifies_and_takes_each_delivery_once(stack: ExampleStack) -> None:
    with FramebusClient(base_url=stack.gateway_url, api_key=stack.api_key) as client:
        result = client.run({"prompt": "a yellow circle moving down on a white background",
                             "webhook_url": stack.receiver_url}, timeout=60)
    expected = f"{result.request_id} completed: {stack.gateway_url}/v1/generations/{result.request_id}/video"
    deadline = time.monotonic() + 30
    while expected not in stack.receiver_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected in stack.receiver_log.read_text(), stack.receiver_log.read_text()[-2000:]
    forged = httpx.post(stack.receiver_url, content=b'{"type":"generation.completed"}',
                        headers={"webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())),
                                 "webhook-signature": "v1,Zm9yZ2Vk"})
    assert forged.status_code == 400


def test_the_readme_shows_the_receiver_that_is_tested() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:examples/webhook_receiver.py -->\n```python\n(.*?)```", readme, flags=re.S)
    assert block, "README has no receiver block"
    assert block.group(1) == (EXAMPLES / "webhook_receiver.py").read_text()


def test_the_readme_sdk_example_runs_as_written(stack: ExampleStack) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-example:sdk [^\n]*-->\n```python\n(.*?)```", readme, flags=re.S)
    assert block, "README has no SDK example"
    (stack.logs / "readme_sdk.py").write_text(block.group(1))
    done = stack.run("readme_sdk.py")
    assert done.stdout.strip().endswith("['completed', 'completed', 'completed']"), done.stdout
    assert "progress" in done.stdout and (stack.logs / "clip.mp4").read_bytes()[4:8] == b"ftyp"


def test_the_cli_waits_with_progress_and_saves_the_video(stack: ExampleStack) -> None:
    done = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "submit",
                           "a red square moving right on a white background", "--wait", "--output", "cli.mp4"],
                          cwd=stack.logs, env=child_env(stack.settings, FRAMEBUS_TENANT="acme"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "completed" in done.stdout and "saved cli.mp4" in done.stdout + done.stderr
    assert (stack.logs / "cli.mp4").read_bytes()[4:8] == b"ftyp"
