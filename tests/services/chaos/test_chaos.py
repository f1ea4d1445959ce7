"""Chaos: 300 requests across every tier and two tenants flow through null workers while every
part of the pipeline fails once. Afterwards, counted from the topics, S3 and the webhook receiver:
every request ended once, every completed one has its MP4 and ffprobe agrees, each tenant was
charged exactly its completed quotes with nothing left reserved, and each request's webhook was
delivered and verified under one webhook-id.

Faults, in order, each while work is in flight: kill -9 a worker mid-batch, kill -9 the scheduler,
kill -9 metering, kill -9 the notifier, a broker restart, S3 refusing connections for 20 s while
the webhook receiver answers 500 for 30 s. A killed or wedged service is started again, as its
supervisor would.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framebus.client import FramebusClient
from framebus.infra.kafka import KafkaBroker
from framebus.schemas.codec import decode_event
from framebus.schemas.events import GenerationCompleted, StatusChanged
from framebus.schemas.webhooks import WebhookSecrets
from framebus.schemas.workers import JobDispatched
from framebus.services.common.settings import Settings
from framebus.services.common.storage import s3_client
from framebus.services.generator.encode import probe
from framebus.services.metering.queries import balances
from tests.faults import TcpProxy
from tests.services.notifier.test_service import SECRET, Receiver
from tests.services.scheduler.conftest import Pipeline, running_pipeline
from tests.waiting import eventually

TIERS = ("interactive", "standard", "batch")
TENANTS = ("acme", "globex")
WAVES, PER_WAVE = 6, 50  # 300 requests, one wave before each fault
SIZE = {"width": 32, "height": 32, "num_frames": 5, "fps": 8, "num_inference_steps": 2}
ALL_TERMINAL_WITHIN_S = 300.0


@pytest.fixture
def s3_proxy(server_settings: Settings) -> Iterator[TcpProxy]:
    host, port = server_settings.s3_endpoint_url.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    yield proxy
    proxy.close()


@pytest.fixture
def chaos_pipeline(server_settings: Settings, own_broker: KafkaBroker, s3_proxy: TcpProxy,
                   tmp_path: Path) -> Iterator[Pipeline]:
    settings = server_settings.model_copy(update={"kafka_bootstrap": own_broker.endpoint})
    pipelines = running_pipeline(
        settings, tmp_path, client_stall_s=10.0, scheduler_worker_timeout_s=10.0, state_dir=tmp_path / "state",
        webhook_http_hosts=frozenset({"127.0.0.1"}), webhook_allowed_hosts=frozenset({"127.0.0.1"}),
        webhook_retry_schedule_s=(1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0))
    pipeline = next(pipelines)
    # Everything the services do with S3 goes through the proxy; the test reads S3 directly.
    pipeline.settings = pipeline.settings.model_copy(update={"s3_endpoint": s3_proxy.url})
    try:
        yield pipeline
    finally:
        next(pipelines, None)


def _size(n: int) -> dict:
    # The last wave asks for a new size: the null engine has no clip of it in S3 yet, so its
    # uploads meet the S3 refusal (earlier sizes' clips were uploaded once and are shared).
    return {**SIZE, "width": 48, "height": 48} if n >= (WAVES - 1) * PER_WAVE else SIZE


def _request(n: int, receiver: Receiver) -> dict:
    return {"request_id": f"chaos-{n}", "prompt": f"a red circle moving left, take {n}", "model": "wan-tiny",
            "tier": TIERS[n % 3], "webhook_url": receiver.url, **_size(n)}


def _supervise_for(pipeline: Pipeline, seconds: float) -> None:
    """Play the supervisor for ``seconds``: start again whatever exited (killed, or wedged and gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pipeline.relaunch_exited()
        time.sleep(0.25)


def test_three_hundred_requests_survive_every_fault_exactly_once(
        chaos_pipeline: Pipeline, own_broker: KafkaBroker, s3_proxy: TcpProxy, server_settings: Settings) -> None:
    pipeline = chaos_pipeline
    receiver = Receiver([200])
    pipeline.admin.create("globex")
    pipeline.admin.credit("globex", 10_000.0)
    for tenant in TENANTS:
        pipeline.client.publish(WebhookSecrets(tenant_id=tenant, secrets=(SECRET,)), "framebus.webhooks.secrets")
    scheduler = pipeline.start_scheduler()
    workers = [pipeline.start_worker(w, delay_ms=400, batch=4, slots=2) for w in ("w1", "w2")]
    metering = pipeline.start(["metering"], "metering.log")
    notifier = pipeline.start(["notifier"], "notifier.log")
    clients = {"acme": pipeline.client,
               "globex": FramebusClient(settings=pipeline.settings.model_copy(update={"tenant": "globex"}),
                                        source="/tests")}

    context = pipeline.settings.request_context()  # the test's receiver is an allowlisted http host

    def jobs() -> list[JobDispatched]:
        found = [decode_event(r.headers, r.value, context=context).event
                 for r in pipeline.records("framebus.jobs", until=10**9, timeout_s=1) if r.value]
        return [job for job in found if isinstance(job, JobDispatched)]

    def wave(number: int, settle_s: float = 2.0) -> None:
        for n in range(number * PER_WAVE, (number + 1) * PER_WAVE):
            clients[TENANTS[n % 2]].submit(_request(n, receiver))
        _supervise_for(pipeline, settle_s)  # the wave is in flight when the fault comes

    def kill_worker_mid_batch() -> None:
        # The wave is queued; kill w1 as soon as a job of it reaches w1 (it then holds that batch).
        assert eventually(lambda: any(job.worker_id == "w1" and job.requests[0].request_id.startswith("chaos-")
                                      for job in jobs()), timeout_s=30, interval_s=0.05)
        pipeline.kill(workers[0])

    faults = [
        ("kill -9 a worker mid-batch", kill_worker_mid_batch),
        ("kill -9 the scheduler", lambda: pipeline.kill(scheduler)),
        ("kill -9 metering", lambda: pipeline.kill(metering)),
        ("kill -9 the notifier", lambda: pipeline.kill(notifier)),
        ("restart the broker", lambda: (own_broker.stop(), time.sleep(5), own_broker.start())),
    ]
    try:
        for number, (name, fault) in enumerate(faults):
            wave(number, settle_s=0.0 if number == 0 else 2.0)
            started = time.monotonic()
            fault()
            print(f"fault {number + 1}: {name} ({time.monotonic() - started:.1f}s)")
            _supervise_for(pipeline, 3.0)
        print("fault 6: S3 refuses connections for 20 s; the webhook receiver answers 500 for 30 s")
        s3_proxy.refuse()
        receiver.statuses = [500]
        wave(len(faults))  # its uploads meet the refusal
        _supervise_for(pipeline, 18.0)
        s3_proxy.accept()
        _supervise_for(pipeline, 10.0)
        receiver.statuses = [200]
        last_fault = time.monotonic()
    finally:
        clients["globex"].close()
    total = WAVES * PER_WAVE
    wanted = {f"chaos-{n}" for n in range(total)}

    def terminal() -> dict[str, StatusChanged]:
        found = {}
        for record in pipeline.records("framebus.status", until=10**9, timeout_s=3):
            if record.value:
                event = decode_event(record.headers, record.value).event
                if isinstance(event, StatusChanged) and event.state.is_terminal:
                    found[event.request_id] = event
        return found

    assert eventually(lambda: pipeline.relaunch_exited() or wanted <= set(terminal()),
                      timeout_s=ALL_TERMINAL_WITHIN_S, interval_s=2.0), \
        f"not terminal: {sorted(wanted - set(terminal()))[:20]}\n{pipeline.log('scheduler.log')}"
    settled_after = time.monotonic() - last_fault

    # One terminal state each: what every reader takes is a request's first result.
    results = collections.defaultdict(list)
    for result in pipeline.results(until=10**9, timeout_s=5):
        results[result.request_id].append(result)
    assert set(results) == wanted
    first = {rid: found[0] for rid, found in results.items()}
    ended = terminal()
    assert all(ended[rid].state.value == first[rid].outcome for rid in wanted), "status and result disagree"
    twice = sorted(rid for rid, found in results.items() if len(found) > 1)
    again = {request.request_id for job in jobs() if job.attempt > 1 for request in job.requests}
    assert again, "the killed worker held work: its requests were dispatched again"
    upload_retries = sum((pipeline.logs / f"worker-{w}.log").read_text(errors="replace").count("retrying in")
                         for w in ("w1", "w2"))
    assert upload_retries, "uploads met the S3 refusal and were retried"
    completed = {rid: r for rid, r in first.items() if isinstance(r, GenerationCompleted)}

    # Every completed request's MP4 is in S3, and ffprobe agrees with the request.
    s3 = s3_client(pipeline.settings.model_copy(update={"s3_endpoint": server_settings.s3_endpoint_url}))
    scratch = Path(pipeline.logs) / "videos"
    scratch.mkdir(exist_ok=True)
    for rid, result in completed.items():
        path = scratch / f"{rid}.mp4"
        s3.download_file(result.output.bucket, result.output.key, str(path))
        found = probe(path)
        asked = _size(int(rid.removeprefix("chaos-")))
        assert (found.width, found.height, found.num_frames) == (asked["width"], asked["height"], asked["num_frames"]), rid

    # Per tenant: charged exactly the completed quotes, nothing left reserved.
    def books_closed() -> bool:
        folded = balances(pipeline.settings)
        return all(abs(float(folded.of(t).charged) - sum(r.usage.tokens for r in completed.values() if r.tenant_id == t))
                   < 1e-6 and float(folded.of(t).reserved) < 1e-9 for t in TENANTS)

    assert eventually(lambda: pipeline.relaunch_exited() or books_closed(), timeout_s=60, interval_s=2.0), \
        {t: (balances(pipeline.settings).of(t), sum(r.usage.tokens for r in completed.values() if r.tenant_id == t))
         for t in TENANTS}

    # Each request's webhook delivered and verified, under exactly one webhook-id.
    def ids_by_request() -> dict[str, set[str]]:
        by_request = collections.defaultdict(set)
        for (headers, _), payload in zip(receiver.calls, receiver.verified(), strict=True):
            by_request[payload["data"]["request_id"]].add(headers["webhook-id"])
        return by_request

    assert eventually(lambda: pipeline.relaunch_exited() or wanted <= set(ids_by_request()), timeout_s=120,
                      interval_s=2.0), f"no webhook for {sorted(wanted - set(ids_by_request()))[:20]}"
    assert {rid: ids for rid, ids in ids_by_request().items() if len(ids) != 1} == {}

    outcomes = collections.Counter(r.outcome for r in first.values())
    print(f"{total} requests: {dict(outcomes)}; {len(again)} dispatched again; "
          f"{len(twice)} with a second result ({twice[:5]}); {upload_retries} upload retries; "
          f"{len(completed)} MP4s probed; books closed for {', '.join(TENANTS)}; "
          f"{len(receiver.calls)} webhook calls, one webhook-id per request; all terminal {settled_after:.0f}s "
          f"after the last fault; restarted by the supervisor: {pipeline.restarted}")
