"""The demo run: the scheduler, metering, the notifier and a diffusers worker (wan-shapes)
as child processes; a few requests across the tiers followed to the end with a progress
bar; the tenant's balance once metering has settled them; and one signed webhook per
request, verified by a local receiver with the standardwebhooks library.

wan-shapes is a small Wan pipeline trained in this repository on clips of coloured shapes:
every stage runs (text encoder, denoising, VAE decode, ffmpeg, S3) and each video shows what
its prompt asks for, which the demo checks with the quality gate's detector.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from framebus.client import FramebusClient
from framebus.infra.process import terminate
from framebus.schemas.codec import decode_event
from framebus.schemas.events import StatusChanged
from framebus.schemas.webhooks import WebhookSecrets
from framebus.services.common.children import launch
from framebus.services.common.compacted import read_latest
from framebus.services.common.errors import FramebusError
from framebus.services.common.settings import Settings
from framebus.services.demo.receiver import VerifyingReceiver
from framebus.services.gateway.tenants import TenantAdmin

DEMO_TENANT = "demo"
PROMPTS = [("interactive", "a red circle moving left on a white background"),
           ("standard", "a blue triangle moving up on a black background"),
           ("batch", "a yellow circle moving right on a gray background"),
           ("batch", "a green triangle moving down on a white background")]
SEED = 1  # one fixed seed: every demo run shows the same four videos
SHAPE = {"model": "wan-shapes", "width": 64, "height": 64, "num_frames": 17, "num_inference_steps": 20}


@dataclass(frozen=True)
class DemoResult:
    request_id: str
    tier: str
    prompt: str
    status: StatusChanged | None
    drew: str | None = None  # what the quality gate's detector reads in the delivered video
    as_asked: bool | None = None  # whether that is what the prompt asked for
    wrong: tuple[str, ...] = ()  # the attributes that differ from the prompt


@dataclass(frozen=True)
class DemoBalance:
    charged: float
    reserved: float
    available: float


def ensure_demo_tenant(client: FramebusClient) -> str:
    """The demo tenant, credited, with a webhook signing secret; returns the newest secret."""
    admin = TenantAdmin(client)
    if admin.get(DEMO_TENANT) is None:
        admin.create(DEMO_TENANT, display_name="framebus demo")
        admin.credit(DEMO_TENANT, 1000.0, reason="demo credit")
    settings = client.settings
    record = read_latest(settings.bootstrap_servers, settings.topic("framebus.webhooks.secrets"), DEMO_TENANT)
    if record is not None:
        return decode_event(record.headers, record.value).event.secrets[0]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    client.publish(WebhookSecrets(tenant_id=DEMO_TENANT, secrets=(secret,)),
                   "framebus.webhooks.secrets").get(timeout=settings.submit_deadline_s)
    return secret


@dataclass(frozen=True)
class DemoRun:
    results: list[DemoResult]
    balance: DemoBalance  # the demo tenant's, after metering settled these requests
    webhooks_verified: int  # deliveries whose Standard Webhooks signature verified, one per request


def run_demo(settings: Settings, logs: Path, *, on_progress=lambda done, total: None,
             timeout_s: float = 120.0) -> DemoRun:
    """Run the pipeline on a few prompts; stops the processes it started, whatever happens."""
    # The demo's webhook receiver is on this machine: allow plain http to it and let the SSRF guard pass it.
    settings = settings.model_copy(update={"kafka_bootstrap": settings.bootstrap_servers,
                                           "s3_endpoint": settings.s3_endpoint_url,
                                           "webhook_http_hosts": frozenset({"127.0.0.1"}),
                                           "webhook_allowed_hosts": frozenset({"127.0.0.1"})})
    processes = [launch(settings, ["scheduler"], logs / "scheduler.log"),
                 launch(settings, ["metering"], logs / "metering.log"),
                 launch(settings, ["notifier"], logs / "notifier.log"),
                 launch(settings, ["worker", "--engine", "diffusers", "--model", "wan-shapes", "--worker-id", f"demo-{uuid.uuid4().hex[:6]}",
                                   "--batch", "4"],
                        logs / "worker.log")]
    try:
        with FramebusClient(tenant_id=DEMO_TENANT, settings=settings, source="/framebus/demo") as client:
            receiver = VerifyingReceiver(ensure_demo_tenant(client))
            run = uuid.uuid4().hex[:6]
            ids = [(f"demo-{run}-{n}", tier, prompt) for n, (tier, prompt) in enumerate(PROMPTS)]
            client.submit_many([{"request_id": rid, "tier": tier, "prompt": prompt, "webhook_url": receiver.url,
                                 "seed": SEED, **SHAPE} for rid, tier, prompt in ids])
            finals: dict[str, StatusChanged] = {}
            deadline = time.monotonic() + timeout_s
            while len(finals) < len(ids) and time.monotonic() < deadline:
                for rid, _, _ in ids:
                    if rid not in finals and (status := client.status(rid, timeout_s=5)) and status.state.is_terminal:
                        finals[rid] = status
                on_progress(len(finals), len(ids))
                time.sleep(0.5)
            if len(finals) < len(ids):
                raise FramebusError(f"only {len(finals)} of {len(ids)} demo requests finished in {timeout_s:g}s; "
                                    f"see the logs in {logs}")
            results = [look_at(DemoResult(rid, tier, prompt, finals.get(rid)), logs) for rid, tier, prompt in ids]
            balance = settled_balance(settings, [rid for rid, _, _ in ids])
            wanted = {rid for rid, _, _ in ids}
            deadline = time.monotonic() + 30
            while not wanted <= receiver.request_ids() and time.monotonic() < deadline:
                time.sleep(0.2)
            receiver.close()
            return DemoRun(results, balance, len(wanted & receiver.request_ids()))
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=15)


def look_at(result: DemoResult, scratch: Path) -> DemoResult:
    """Download a completed video by its link and read it with the quality gate's detector."""
    import httpx

    from framebus.services.generator.encode import decode_video
    from framebus.services.shapes.dataset import parse
    from framebus.services.shapes.detect import detect

    output = result.status.output if result.status is not None else None
    if output is None:
        return result
    path = scratch / f"{result.request_id}.mp4"
    path.write_bytes(httpx.get(output.url, timeout=30).raise_for_status().content)
    found = detect(decode_video(path))
    wanted = parse(result.prompt)
    if wanted is None:
        return replace(result, drew=found.describe())
    wrong = tuple(name for name, ok in found.matches(wanted).items() if not ok)
    return replace(result, drew=found.describe(), as_asked=not wrong, wrong=wrong)


def settled_balance(settings: Settings, request_ids: list[str], *, timeout_s: float = 60.0) -> DemoBalance:
    """The demo tenant's balance once metering has settled the demo's requests."""
    from framebus.services.metering.queries import balances

    settings = settings.model_copy(update={"kafka_bootstrap": settings.bootstrap_servers})
    deadline = time.monotonic() + timeout_s
    while True:
        folded = balances(settings, DEMO_TENANT)
        if all(folded.is_settled(DEMO_TENANT, rid) for rid in request_ids) or time.monotonic() > deadline:
            held = folded.of(DEMO_TENANT)
            return DemoBalance(float(held.charged), float(held.reserved), float(held.available()))
        time.sleep(0.5)
