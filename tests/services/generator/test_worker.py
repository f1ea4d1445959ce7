"""A diffusers worker on the real broker and S3: jobs in, videos stored, one result per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from framebus.client import FramebusClient
from framebus.schemas.codec import decode_event, encode_event
from framebus.schemas.events import CancelRequested, GenerationRequest, TenantStorage
from framebus.schemas.state import ErrorCode, ModelName
from framebus.schemas.workers import JobDispatched, Shape
from framebus.services.common import kafka as kafka_adapter
from framebus.services.common import storage
from framebus.services.common.settings import Settings
from framebus.services.gateway.tenants import TenantAdmin
from framebus.services.generator.app import assemble_worker
from framebus.services.generator.diffusion import DiffusionEngine
from framebus.services.generator.encode import EncodeConfig, probe
from framebus.services.generator.errors import EngineOutOfMemory
from framebus.services.generator.models import REGISTRY
from framebus.services.generator.optimize import EngineOptions
from framebus.services.generator.rendered import Rendered
from framebus.services.generator.storage import RetryPolicy, StorageTarget, VideoStore
from framebus.services.generator.tenants import TenantTargets
from framebus.services.generator.worker import WorkerConfig
from tests.waiting import eventually


@pytest.fixture(scope="module")
def tiny_engine() -> DiffusionEngine:
    engine = DiffusionEngine.load(REGISTRY[ModelName.WAN_TINY], EngineOptions(prompt_cache=64))
    engine.warm()
    return engine


def request(request_id: str, seed: int = 7, prompt: str = "a red fox in the snow", **fields) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, prompt=prompt, model="wan-tiny", width=64, height=48,
                             num_frames=5, seed=seed, **{"num_inference_steps": 3, "tenant_id": "acme", **fields})


class Harness:
    """A worker thread plus a producer for jobs and readers for what comes out."""

    def __init__(self, settings: Settings, engine, store: VideoStore, spool, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.worker = assemble_worker(settings, engine=engine, store=store, spool_dir=spool,
                                      config=WorkerConfig(worker_id=worker_id, max_batch_size=8,
                                                          heartbeat_interval_s=0.5),
                                      encode=EncodeConfig(x264_preset="ultrafast"))
        self.producer = kafka_adapter.producer(settings.bootstrap_servers)
        self.seq = 0
        self.thread = threading.Thread(target=self.worker.run, kwargs={"max_seconds": 240}, daemon=True)
        self.results = kafka_adapter.consumer(settings.bootstrap_servers, settings.topic("framebus.results"),
                                              group_id=None)
        self.seen: dict[str, object] = {}

    def start(self) -> None:
        self.thread.start()
        workers = kafka_adapter.consumer(self.settings.bootstrap_servers, self.settings.topic("framebus.workers"),
                                         group_id=None)
        try:
            assert eventually(lambda: any(r.key == self.worker_id.encode()
                                          for rs in workers.poll(timeout_ms=200).values() for r in rs), 120), \
                "the worker announced itself once warm"
        finally:
            workers.close()

    def send_job(self, *requests: GenerationRequest) -> JobDispatched:
        job = JobDispatched(job_id=f"job-{self.seq}", worker_id=self.worker_id, seq=self.seq,
                            shape=Shape.of(requests[0]), requests=requests)
        self.seq += 1
        self.send(job)
        return job

    def send(self, event, key: bytes | None = None) -> None:
        record = encode_event(event, source="/test")
        self.producer.send(self.settings.topic("framebus.jobs"), key=key or self.worker_id.encode(),
                           value=record.value, headers=record.headers)
        self.producer.flush()

    def wait_results(self, count: int, timeout_s: float = 120) -> dict:
        def enough() -> bool:
            for records in self.results.poll(timeout_ms=200).values():
                for record in records:
                    event = decode_event(record.headers, record.value).event
                    assert event.request_id not in self.seen, f"two results for {event.request_id}"
                    self.seen[event.request_id] = event
            return len(self.seen) >= count

        assert eventually(enough, timeout_s), f"only {len(self.seen)} of {count} results: {sorted(self.seen)}"
        return self.seen

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=60)
        self.results.close()
        self.producer.close()


@pytest.fixture
def make_harness(provisioned_settings: Settings, tmp_path) -> Iterator:
    made: list[Harness] = []

    def make(engine, *, store: VideoStore | None = None, worker_id: str = "w-test") -> Harness:
        client = storage.s3_client(provisioned_settings)
        store = store or VideoStore(StorageTarget(client, provisioned_settings.s3_bucket), 600)
        harness = Harness(provisioned_settings, engine, store, tmp_path / f"spool-{worker_id}", worker_id)
        harness.start()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()


def test_jobs_become_checked_videos_with_usage_and_repeats_are_copies(make_harness, tiny_engine, provisioned_settings):
    harness = make_harness(tiny_engine)
    harness.send_job(request("r-1"), request("r-2"), request("r-3", prompt="a lighthouse"))  # r-2 repeats r-1
    first = harness.wait_results(3)
    harness.send_job(request("r-4"))  # repeats r-1 in a later job: the result cache
    results = harness.wait_results(4)
    assert {r.outcome for r in results.values()} == {"completed"}
    r1, r2, r3, r4 = (results[f"r-{n}"] for n in range(1, 5))
    assert not r1.usage.result_cache_hit and r1.usage.gpu_seconds > 0 and r1.usage.steps_run == 3
    for repeat in (r2, r4):
        assert repeat.usage.result_cache_hit and repeat.usage.gpu_seconds == 0
        assert repeat.output.sha256 == r1.output.sha256 and repeat.output.key.endswith(f"{repeat.request_id}.mp4")
    assert r3.output.sha256 != r1.output.sha256
    assert r1.usage.tokens == request("r-1").quote()
    timings = r3.timings
    assert timings.denoise_s > 0 and timings.decode_s > 0 and timings.encode_s > 0 and timings.upload_s > 0
    # What a user downloads is a real H.264 clip of the requested shape.
    body = httpx.get(r3.output.url, timeout=10).content
    local = provisioned_settings.state_dir / "r-3.mp4"
    local.write_bytes(body)
    found = probe(local)
    assert (found.codec, found.width, found.height, found.num_frames) == ("h264", 64, 48, 5)
    assert first["r-1"].output.key == f"acme/{request('r-1').submitted_at:%Y/%m/%d}/r-1.mp4"
    assert not list(harness.worker.spool_dir.glob("*.mp4")), "the spool is emptied after upload"
    # Followers saw it go: each denoising step reported (first and last at least), then encoding, then uploading.
    stages = [(e.stage, e.step, e.steps) for e in progress_of(provisioned_settings, "r-3")]
    assert stages[-2:] == [("encoding", None, None), ("uploading", None, None)], stages
    steps = [step for stage, step, _ in stages if stage == "denoising"]
    assert steps[0] == 1 and steps[-1] == stages[0][2] == 3 and steps == sorted(steps), stages


def progress_of(settings: Settings, request_id: str) -> list:
    reader = kafka_adapter.consumer(settings.bootstrap_servers, settings.topic("framebus.progress"), group_id=None)
    found: list = []
    try:
        for _ in range(10):
            for records in reader.poll(timeout_ms=300).values():
                found += [e for r in records if (e := decode_event(r.headers, r.value).event).request_id == request_id]
    finally:
        reader.close()
    return found


def test_unreadable_job_goes_to_the_dead_letter_topic_and_the_worker_keeps_going(make_harness, tiny_engine,
                                                                                 provisioned_settings):
    harness = make_harness(tiny_engine)
    harness.producer.send(provisioned_settings.topic("framebus.jobs"), key=harness.worker_id.encode(),
                          value=b"{not json", headers=[("ce_type", b"framebus.job.dispatched")])
    harness.producer.flush()
    harness.send_job(request("r-after"))
    assert harness.wait_results(1)["r-after"].outcome == "completed"
    dead = kafka_adapter.consumer(provisioned_settings.bootstrap_servers,
                                  provisioned_settings.topic("framebus.jobs.dead"), group_id=None)
    found = []
    assert eventually(lambda: found.extend(r for rs in dead.poll(timeout_ms=200).values() for r in rs) or found, 30)
    dead.close()
    headers = dict(found[0].headers)
    assert found[0].value == b"{not json" and headers["framebus-dead-worker"] == harness.worker_id.encode()
    assert headers["framebus-dead-reason"] and headers["framebus-dead-detail"]


def test_a_cancel_for_a_running_request_ends_it_cancelled_and_the_rest_completes(make_harness, tiny_engine):
    harness = make_harness(tiny_engine)
    harness.send_job(request("keep", num_inference_steps=40), request("drop", seed=9, num_inference_steps=40))
    harness.send(CancelRequested(request_id="drop", tenant_id="acme"))
    results = harness.wait_results(2)
    assert results["keep"].outcome == "completed" and results["drop"].outcome == "cancelled"


class BrokenFrames:
    """An engine double whose frames ffmpeg cannot take (odd width)."""

    def __init__(self, real) -> None:
        self.real, self.name, self.model, self.engine_id = real, "broken", real.model, ""

    def warm(self) -> None:
        pass

    def render(self, requests, cancelled, on_step=None):
        return [replace(item, frames=item.frames[:, :, :-1]) for item in self.real.render(requests, cancelled)]


class FitsOneAtATime:
    """An engine double that runs out of memory on any batch larger than ``limit``."""

    def __init__(self, real, limit: int) -> None:
        self.real, self.limit, self.name, self.model, self.engine_id = real, limit, "small", real.model, ""
        self.batches: list[int] = []

    def warm(self) -> None:
        pass

    def render(self, requests, cancelled, on_step=None) -> list[Rendered]:
        self.batches.append(len(requests))
        if len(requests) > self.limit:
            raise EngineOutOfMemory(f"{len(requests)} do not fit")
        return self.real.render(requests, cancelled)


def test_an_encode_failure_is_reported_with_ffmpegs_message(make_harness, tiny_engine):
    harness = make_harness(BrokenFrames(tiny_engine), worker_id="w-broken")
    harness.send_job(request("odd"))
    failed = harness.wait_results(1)["odd"]
    assert failed.outcome == "failed" and failed.error.code == ErrorCode.ENCODE_FAILED
    assert "ffmpeg (libx264) failed" in failed.error.message


def test_out_of_memory_splits_the_batch_and_everything_completes(make_harness, tiny_engine):
    engine = FitsOneAtATime(tiny_engine, limit=1)
    harness = make_harness(engine, worker_id="w-small")
    harness.send_job(*(request(f"s-{n}", seed=n) for n in range(3)))
    results = harness.wait_results(3)
    assert {r.outcome for r in results.values()} == {"completed"}
    assert engine.batches == [3, 1, 2, 1, 1]


def test_out_of_memory_even_alone_fails_that_request(make_harness, tiny_engine):
    harness = make_harness(FitsOneAtATime(tiny_engine, limit=0), worker_id="w-none")
    harness.send_job(request("big"))
    failed = harness.wait_results(1)["big"]
    assert failed.outcome == "failed" and failed.error.code == ErrorCode.OUT_OF_MEMORY


def test_s3_down_past_the_deadline_is_upload_failed_and_the_spool_is_cleared(make_harness, tiny_engine,
                                                                             provisioned_settings):
    dead = storage.make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key="x", secret_key="y")
    store = VideoStore(StorageTarget(dead, provisioned_settings.s3_bucket), 600,
                       retry=RetryPolicy(deadline_s=1.5, first_backoff_s=0.2))
    harness = make_harness(tiny_engine, store=store, worker_id="w-nos3")
    harness.send_job(request("lost-upload"))
    failed = harness.wait_results(1)["lost-upload"]
    assert failed.outcome == "failed" and failed.error.code == ErrorCode.UPLOAD_FAILED
    assert "failed" in failed.error.message and "1.5 s" in failed.error.message
    assert not list(harness.worker.spool_dir.glob("*.mp4"))


def test_a_tenant_with_its_own_bucket_gets_its_videos_there_and_credentials_never_leak(
        make_harness, tiny_engine, provisioned_settings, bucket_factory, monkeypatch):
    own_bucket = bucket_factory()
    secret = provisioned_settings.s3_secret_key.get_secret_value()
    monkeypatch.setenv("FRAMEBUS_CREDENTIALS_BYO_ACCESS_KEY_ID", provisioned_settings.s3_access_key)
    monkeypatch.setenv("FRAMEBUS_CREDENTIALS_BYO_SECRET_ACCESS_KEY", secret)
    own = {"endpoint_url": provisioned_settings.s3_endpoint_url, "region": "us-east-1", "bucket": own_bucket}
    with FramebusClient(settings=provisioned_settings, source="/test") as client:
        admin = TenantAdmin(client)
        for tenant, ref in (("byo", "BYO"), ("nocreds", "NOT_ON_THIS_WORKER")):
            admin.create(tenant)
            admin.set_storage(tenant, TenantStorage(credentials_ref=ref, **own))
    default = StorageTarget(storage.s3_client(provisioned_settings), provisioned_settings.s3_bucket)
    store = VideoStore(default, 600, retry=RetryPolicy(deadline_s=60), target_for=TenantTargets(provisioned_settings))
    harness = make_harness(tiny_engine, store=store, worker_id="w-byo")
    harness.send_job(request("mine", tenant_id="byo"), request("theirs", tenant_id="acme"))
    harness.send_job(request("no-creds", tenant_id="nocreds"))
    started = time.monotonic()
    results = harness.wait_results(3)
    assert results["mine"].output.bucket == own_bucket and results["theirs"].output.bucket == default.bucket
    assert default.client.head_object(Bucket=own_bucket, Key=results["mine"].output.key)["ContentLength"] > 0
    failed = results["no-creds"]
    assert failed.outcome == "failed" and failed.error.code == ErrorCode.UPLOAD_FAILED
    assert "FRAMEBUS_CREDENTIALS_NOT_ON_THIS_WORKER_ACCESS_KEY_ID" in failed.error.message
    assert time.monotonic() - started < 50, "a missing credential fails at once, it is not retried to the deadline"
    for event in results.values():
        assert secret not in event.model_dump_json()


class _NeverAcknowledged:
    """What a wedged kafka-python producer gives back: sends accepted, never acknowledged."""

    def __init__(self, real) -> None:
        self.real = real

    def send(self, *args, **kwargs):
        class Pending:
            def add_callback(self, *a, **k):
                return self

            def add_errback(self, *a, **k):
                return self

        return Pending()

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_worker_whose_producer_is_wedged_while_the_broker_answers_stops_itself(provisioned_settings, tmp_path):
    """Seen after broker restarts: a worker whose heartbeats never reached the broker again while
    the process ran on. The watchdog asks the broker on a fresh connection, finds it answering,
    and stops the worker with `failure` set (app.run then exits 1 for its supervisor)."""
    from framebus.services.generator.engine import NullEngine

    settings = provisioned_settings.model_copy(update={"client_stall_s": 2.0})
    client = storage.s3_client(settings)
    store = VideoStore(StorageTarget(client, settings.s3_bucket), 600)
    harness = Harness(settings, NullEngine(tmp_path / "clips"), store, tmp_path / "spool", "w-wedged")
    harness.start()
    assert harness.worker.failure is None
    harness.worker._producer = _NeverAcknowledged(harness.worker._producer)  # noqa: SLF001 - the wedge
    began = time.monotonic()
    harness.thread.join(timeout=30)
    assert not harness.thread.is_alive(), "the worker stopped itself"
    assert "wedged" in (harness.worker.failure or "")
    assert time.monotonic() - began < 2.0 + 2.0 + 3.0
    for client in (harness.results, harness.producer, harness.worker._consumer, harness.worker._producer.real):  # noqa: SLF001
        client.close()


class BrokenDevice:
    """An engine double whose device fails for good, as a CUDA context does after an illegal access."""

    name, model, engine_id = "broken", "wan-tiny", "broken"

    def warm(self) -> None:
        pass

    def render(self, requests, cancelled, on_step=None) -> list[Rendered]:
        from framebus.services.generator.errors import EngineBroken

        raise EngineBroken("CUDA error: an illegal memory access was encountered")


def test_a_broken_device_hands_the_job_back_and_stops_the_worker(make_harness, provisioned_settings):
    control = kafka_adapter.consumer(provisioned_settings.bootstrap_servers,
                                     provisioned_settings.topic("framebus.control"), group_id=None)
    harness = make_harness(BrokenDevice(), worker_id="w-dead-gpu")
    harness.send_job(request("b-1"), request("b-2", seed=2))
    returned: set[str] = set()

    def handed_back() -> bool:
        for records in control.poll(timeout_ms=200).values():
            returned.update(decode_event(r.headers, r.value).event.request_id for r in records)
        return returned == {"b-1", "b-2"}

    try:
        assert eventually(handed_back, 60), returned
        assert eventually(lambda: not harness.thread.is_alive(), 60), "the worker stopped"
        assert harness.worker.engine_broken and "illegal memory access" in harness.worker.engine_broken
        assert harness.results.poll(timeout_ms=500) == {}, "no result: the requests run elsewhere"
    finally:
        control.close()
