"""The SDK against the whole chain: gateway, scheduler and a null worker as processes on real Kafka and S3.

What an application developer sees: submit, wait, progress as it happens, a video link that
still works after the presigned one died, the same calls over Kafka, and async fan-out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from framebus.client import AsyncFramebusClient, FramebusClient
from framebus.errors import AuthenticationError, NotFoundError
from framebus.infra.process import free_port, terminate
from framebus.services.common.children import launch
from framebus.services.common.settings import Settings
from framebus.services.common.stack import Stack
from framebus.services.gateway.launcher import launch_gateway
from framebus.services.gateway.tenants import TenantAdmin

SHAPE = {"prompt": "a red circle moving left on a white background", "tier": "interactive", "width": 64,
         "height": 64, "num_frames": 9}
STATE_ORDER = ["accepted", "queued", "dispatched", "running", "completed"]


@dataclass
class HttpStack:
    url: str
    api_key: str
    settings: Settings
    logs: Path

    def client(self, **options) -> FramebusClient:
        return FramebusClient(base_url=self.url, api_key=self.api_key, **options)


@pytest.fixture(scope="module")
def stack(server_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    """Presigned links live 2 s here, so a test can outlive one; the worker "denoises" for 2.5 s."""
    port = free_port()
    settings = server_settings.model_copy(update={
        "topic_prefix": f"sdk.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"sdk-{uuid.uuid4().hex[:8]}",
        "s3_presign_expiry_s": 2, "tenant": "acme", "gateway_port": port,
        "gateway_public_url": f"http://127.0.0.1:{port}", "scheduler_worker_timeout_s": 3.0})
    logs = tmp_path_factory.mktemp("sdk")
    Stack(settings).up()
    admin = TenantAdmin(FramebusClient(settings=settings, source="/tests"))
    admin.create("acme")
    admin.credit("acme", 100_000)
    key = admin.issue_key("acme").plaintext
    processes = [launch(settings, ["scheduler"], logs / "scheduler.log"),
                 launch(settings, ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "sdk-w",
                                   "--delay-ms", "2500", "--batch", "4", "--slots", "2", "--heartbeat-s", "0.5"],
                        logs / "worker.log")]
    try:
        gateway, url = launch_gateway(settings, logs / "gateway.log", port=port)
        processes.append(gateway)
        yield HttpStack(url, key, settings, logs)
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        admin.client.close()


def test_submit_wait_and_download_through_the_stable_link_after_the_presigned_one_expired(
        stack: HttpStack, tmp_path: Path) -> None:
    with stack.client() as client:
        result = client.run(SHAPE, timeout=90)
        assert result.state.value == "completed" and result.terminal, result
        assert result.video_url == f"{stack.url}/v1/generations/{result.request_id}/video"
        time.sleep(max(0.0, (result.output.url_expires_at.timestamp() - time.time())) + 1.5)
        assert httpx.get(result.output.url, timeout=10).status_code == 403  # the presigned link is dead
        saved = client.download(result, tmp_path / "clip.mp4")
        assert saved.read_bytes()[4:8] == b"ftyp" and saved.stat().st_size == result.output.bytes


def test_the_event_stream_shows_each_state_in_order_with_progress_and_ends_with_the_terminal_event(
        stack: HttpStack) -> None:
    with stack.client() as client:
        handle = client.submit(SHAPE)
        items = list(handle.events(timeout=90))
    kinds = [item.kind for item in items]
    states = [item.data.state.value for item in items if item.kind != "progress"]
    assert kinds[-1] == "completed" and items[-1].terminal, kinds
    assert states == sorted(states, key=STATE_ORDER.index) and len(set(states)) == len(states), states
    assert {"running", "completed"} <= set(states), states
    steps = [(item.data.stage, item.data.step, item.data.steps) for item in items if item.kind == "progress"]
    assert steps and all(stage == "denoising" for stage, _, _ in steps), kinds
    assert steps[-1][1] == steps[-1][2], steps  # the last step is always reported
    assert kinds.index("progress") > states.index("running") - len(states), kinds


def test_the_raw_stream_is_server_sent_events_with_named_events_and_ids(stack: HttpStack) -> None:
    with stack.client() as client:
        handle = client.submit(SHAPE)
    with httpx.stream("GET", f"{stack.url}/v1/generations/{handle.request_id}/events", timeout=90,
                      headers={"Authorization": f"Bearer {stack.api_key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    ids = [int(line.removeprefix("id: ")) for line in text.splitlines() if line.startswith("id: ")]
    assert events[-1] == "completed" and ids == list(range(1, len(events) + 1)), text


def test_errors_are_typed(stack: HttpStack) -> None:
    with stack.client() as client:
        assert client.status("never-submitted") is None
        with pytest.raises(NotFoundError):
            client.wait("never-submitted", timeout=5)
        pending = client.submit({**SHAPE, "tier": "batch"})
        video = httpx.get(f"{stack.url}/v1/generations/{pending.request_id}/video",
                          headers={"Authorization": f"Bearer {stack.api_key}"})
        assert video.status_code == 404 and "has no video" in video.json()["error"]["message"]
    with FramebusClient(base_url=stack.url, api_key="fb_nosuchkey0_" + "x" * 40) as stranger:
        with pytest.raises(AuthenticationError):
            stranger.submit(SHAPE)


def test_a_tenant_rotates_its_own_webhook_secret(stack: HttpStack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    first = httpx.post(f"{stack.url}/v1/webhooks/secret", headers=headers)
    second = httpx.post(f"{stack.url}/v1/webhooks/secret", headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["secret"].startswith("whsec_") and first.json()["secret"] != second.json()["secret"]
    from framebus.kafka import read_latest
    from framebus.schemas.codec import decode_event

    record = read_latest(stack.settings.bootstrap_servers, stack.settings.topic("framebus.webhooks.secrets"), "acme")
    kept = decode_event(record.headers, record.value).event.secrets
    assert kept == (second.json()["secret"], first.json()["secret"])  # the old one signs too while receivers switch


def test_over_kafka_status_costs_no_reads_per_call_and_events_end_with_the_result(stack: HttpStack) -> None:
    with FramebusClient(settings=stack.settings, tenant_id="acme", source="/tests") as client:
        handle = client.submit(SHAPE)
        items = list(handle.events(timeout=90))
        assert items[-1].kind == "completed", [i.kind for i in items]
        follower = client.kafka.follower
        before = follower.records_read
        for _ in range(50):
            assert client.status(handle.request_id).state.value == "completed"
        assert follower.records_read == before  # 50 calls, not one record fetched


def test_async_fan_out_of_twenty_requests_over_http(stack: HttpStack) -> None:
    async def fan_out() -> list:
        async with AsyncFramebusClient(base_url=stack.url, api_key=stack.api_key) as client:
            handles = [await client.submit({**SHAPE, "seed": seed}) for seed in range(20)]
            return await asyncio.gather(*(handle.wait(timeout=120) for handle in handles))

    results = asyncio.run(fan_out())
    assert [r.state.value for r in results] == ["completed"] * 20
